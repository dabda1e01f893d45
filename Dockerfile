# Persona chat dashboard as a Hugging Face Docker Space (runs the same with plain `docker run`).
# Deploy steps and the Space's README front matter: docs/deploy.md.
# tests/test_deploy.py parses this file and runs its CMD and HEALTHCHECK: keep both in exec form.

# Same Python minor as the tests run on and as pyproject.toml's requires-python.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Spaces run the container as UID 1000: that user, with its home, an app folder and a /data folder
# it owns (a Docker volume mounted on /data starts with that owner, so the user can write to it).
RUN useradd -m -u 1000 user \
    && mkdir /home/user/app /data \
    && chown user:user /home/user/app /data

WORKDIR /home/user/app

# Dependencies before the app, so editing the app does not reinstall them. Installed as root into the
# image's site-packages: the app's user can run them but not modify them.
COPY --chown=user requirements.txt .
RUN pip install -r requirements.txt

USER user
# No file watching in a deployed container: nothing edits the app there.
# The Space page embeds the app from another site (*.hf.space inside huggingface.co), so the XSRF
# cookie must be SameSite=None (Streamlit then marks it Secure), or the conversation-import uploader
# gets 403 inside that frame. Serving over plain HTTP on a host other than localhost? Run with
# -e STREAMLIT_SERVER_XSRF_COOKIE_SAME_SITE=lax (docs/deploy.md).
ENV HOME=/home/user \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_SERVER_XSRF_COOKIE_SAME_SITE=none
# Safe defaults for a public deployment (docs/deploy.md, "Public deployment checklist"): visitors
# may not point the server at a base URL of their own unless ALLOWED_BASE_URLS lists it, and
# errors show no tracebacks (no server paths). Run with -e ACCESS_MODE=single-user for your own use.
ENV ACCESS_MODE=private \
    STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none
# Conversations go to /data/dashboard.db: a Space's persistent storage or a Docker volume mounted
# there keeps them; without one they last until the container restarts (docs/deploy.md).
ENV DATA_DIR=/data

COPY --chown=user . .

EXPOSE 8501

# python:3.11-slim has no curl; urlopen raises (exit 1) on a refused connection or a 503.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).read() != b'ok')"]

CMD ["streamlit", "run", "streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
