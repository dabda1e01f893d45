"""Persona chat dashboard: talk to a model through a persona and watch exactly what it sees.

A thin page over `core/`: every number and chart comes from `core.stats` and `core.charts`.
Everything a visitor owns (conversations, API key, settings) lives in `st.session_state`.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import streamlit as st

from core.backends import ChatBackend
from core.charts import dashboard_drawing
from core.connection import Backends, Connection, resolve_connection
from core.conversation import MAX_IMPORT_BYTES, Conversation, Message, MessageState
from core.errors import (
    AddressRefused,
    AuthenticationFailed,
    BackendError,
    BaseUrlRefused,
    ConnectionFailed,
    ConversationImportError,
    DashboardError,
    InvalidSettings,
    PermissionDenied,
    RateLimitedLocally,
)
from core.i18n import LANGUAGE_PARAM, LANGUAGE_STATE, LANGUAGES, Language, language_for
from core.i18n import current as session_translator
from core.limits import DeployerLimits
from core.model_info import ModelTable, load_model_table
from core.netguard import allowed_base_urls_from, base_url_choices
from core.owners import (
    LOCAL_OWNER,
    WORKSPACE_PARAM,
    AccessMode,
    InvalidWorkspaceLink,
    VisitorAccess,
    is_local_visitor,
    new_workspace_token,
    owner_for_token,
    owner_for_user,
    visitor_access,
)
from core.personas import Persona, PersonaCatalog, load_personas
from core.safe_markdown import page_markdown
from core.session import ChatSession
from core.settings import MAX_CONTEXT_BUDGET, MAX_MODEL_NAME, MAX_REPLY_CAP, POLICY_NAMES
from core.stats import dashboard_figures
from core.store import StaleConversation, Store
from core.tokens import (
    BUNDLED_ENCODINGS,
    METHOD_CALIBRATED,
    METHOD_SERVER,
    METHOD_TIKTOKEN,
    get_encoding,
)
from core.workspace import DRAFT_PREFIX, Workspace
from ui import compare_view, personas_view, whatif_view

APP_DIR = Path(__file__).resolve().parent
# Word-by-word pacing of the offline model's reply, so streaming is visible; tests set it to 0.
OFFLINE_CHUNK_DELAY_S = float(os.environ.get("OFFLINE_CHUNK_DELAY_S", "0.02"))
CHAT_HEIGHT_PX = 560
DASHBOARD_HEIGHT_PX = 640
HISTORY_SHOWN = 200  # newest messages drawn on every rerun; older ones behind a toggle
BADGE_COLORS: dict[MessageState, Literal["gray", "orange"]] = {
    MessageState.TRIMMED: "gray",
    MessageState.UNANSWERED: "orange",
    MessageState.REPLACED: "gray",
    MessageState.SUMMARIZED: "gray",
}
# The views, by key; what the switch shows is `views.<key>` in core/locales.
VIEWS = {"chat": "💬 Chat", "personas": "🎭 Personas", "compare": "⚖️ Compare", "whatif": "🔬 What if"}
#: The query parameter naming the open conversation, so a reload returns to it.
CONVERSATION_PARAM = "c"
CONVERSATIONS_LISTED = 30
#: Failures that say the connection itself does not work (not the model or the request).
CONNECTION_ERRORS = (ConnectionFailed, AuthenticationFailed, PermissionDenied, AddressRefused)
#: How often a streaming reply is redrawn (seconds).
STREAM_REDRAW_S = 0.1


# --- process-wide resources: loaded once per process, shared read-only by every session ---------


def personas_dir() -> Path:
    return Path(os.environ.get("PERSONAS_DIR") or APP_DIR / "personas")


def directory_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes when a persona file is added, removed or edited, so the cached catalog reloads."""
    try:
        entries = [(path.name, path.lstat()) for path in directory.iterdir()]
    except OSError:
        return ()
    return tuple(sorted((name, info.st_mtime_ns, info.st_size) for name, info in entries))


@st.cache_resource(show_spinner=False)
def persona_catalog(directory: str, stamp: tuple[tuple[str, int, int], ...]) -> PersonaCatalog:
    return load_personas(directory)


@st.cache_resource(show_spinner=False)
def model_table() -> ModelTable:
    return load_model_table()


@st.cache_resource(show_spinner=False)
def load_tokenizers() -> None:
    for name in BUNDLED_ENCODINGS:
        get_encoding(name)


@st.cache_resource(show_spinner=False)
def freeze_startup_objects() -> None:
    """Move what start-up loaded (modules, tokenizers, personas) out of the garbage collector's
    way: Streamlit runs a full collection after every script run, and without this it walks
    them each time (about 70 ms a run; benchmarks/load.py)."""
    gc.freeze()


def deployer_secrets() -> dict[str, object]:
    """st.secrets as a dict; a deployment with no secrets.toml simply has none."""
    try:
        return dict(st.secrets)
    except FileNotFoundError:
        return {}


# --- language ----------------------------------------------------------------------------------


def tr(key: str, /, **fields: object) -> str:
    """This session's text for `key`, formatted with `fields` (catalogs: core/locales)."""
    return session_translator(st.session_state)(key, **fields)


def tr_plural(key: str, count: int, /, **fields: object) -> str:
    """`key.one` or `key.other` for `count` (also passed as the field `count`)."""
    return session_translator(st.session_state).plural(key, count, **fields)


def page_language() -> Language:
    """This run's language: `?lang=`, else the sidebar choice, else the browser's locale. Kept in
    the session state, where `tr` and the callbacks (which run before the page) read it."""
    language = language_for(
        st.query_params.get(LANGUAGE_PARAM), st.session_state.get("lang_chosen"), st.context.locale
    )
    st.session_state[LANGUAGE_STATE] = language
    return language


def choose_language() -> None:
    """on_change of the language switch; the link keeps the choice, so a reload does too."""
    st.session_state.lang_chosen = st.session_state.lang
    st.query_params[LANGUAGE_PARAM] = st.session_state.lang


def language_switch() -> None:
    st.session_state.lang = session_translator(st.session_state).language  # whichever source chose it
    st.selectbox(
        tr("sidebar.language"),
        list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key="lang",
        on_change=choose_language,
    )


def html_lang() -> None:
    """Streamlit's page says <html lang="en">: say the language shown instead (screen readers
    pick their voice by it, browsers their CJK font and translation offer). Nothing to say while
    the page has only been English. Called last in the sidebar: the element is empty but has a gap."""
    language = session_translator(st.session_state).language
    if language == "en" and not st.session_state.get("html_lang_set"):
        return
    st.session_state.html_lang_set = True
    st.html(f'<script>document.documentElement.lang = "{language}";</script>', unsafe_allow_javascript=True)


# --- per-session state -------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def open_store(database_url: str) -> Store:
    """The process's store (one connection pool shared by every session); errors are not cached,
    so a fixed database is picked up on the next rerun."""
    return Store.from_environ({"DATABASE_URL": database_url})


def current_access() -> VisitorAccess:
    """How this browser session is treated (core/owners.py): from ACCESS_MODE and, when that is
    unset, whether the visitor is on this machine. The handshake's peer and headers do not change
    within a session."""
    local = is_local_visitor(st.context.ip_address, st.context.headers.items())
    return visitor_access(os.environ, local=local)


def visitor_owner(mode: AccessMode) -> str:
    """Whose conversations this browser session sees (see core/owners.py); may stop the page to
    ask for sign-in."""
    if mode == "single-user":
        return LOCAL_OWNER
    user = st.user.to_dict()
    if "is_logged_in" in user:  # the deployer configured OIDC sign-in ([auth] in secrets)
        if not user["is_logged_in"]:
            st.title(f"💬 {tr('page.name')}")
            st.write(tr("signin.prompt"))
            st.button(tr("signin.button"), on_click=st.login, type="primary")
            st.stop()
        return owner_for_user(str(user.get("iss", "")), str(user.get("sub", "")))
    token = st.query_params.get(WORKSPACE_PARAM)
    if not token:
        token = new_workspace_token()
        st.query_params[WORKSPACE_PARAM] = token
        st.session_state.notice = ("info", tr("workspace.private_notice"))
    try:
        return owner_for_token(token)
    except InvalidWorkspaceLink as error:
        st.error(page_markdown(str(error)))
        st.button(tr("workspace.start_new"), on_click=st.query_params.clear)
        st.stop()


def visitor_workspace() -> Workspace:
    """This browser session's workspace, opened on its first run."""
    workspace: Workspace | None = st.session_state.get("workspace")
    if workspace is None:
        owner = visitor_owner(current_access().mode)
        store: Store | None = None
        try:
            store = open_store(os.environ.get("DATABASE_URL", ""))
        except DashboardError as error:
            st.session_state.store_error = tr("store.not_saving", error=error)
        workspace = st.session_state.workspace = Workspace(store, owner)
        opened = st.query_params.get(CONVERSATION_PARAM)
        if opened:  # a reload, or a shared link of one's own: reopen that conversation
            try:
                workspace.open(opened, offline_backend())
                persona_id = workspace.sessions[opened].conversation.persona_id
                if persona_id is not None:
                    st.session_state.persona_id = persona_id
            except DashboardError as error:
                st.session_state.notice = ("error", tr("notice.open_failed", error=error))
    return workspace


def offline_backend() -> ChatBackend:
    """A placeholder backend for a session opened before the connection is known; replaced by the
    connection's backend before any call."""
    backends: Backends = st.session_state.backends
    return backends.for_connection(Connection())


def session_defaults() -> None:
    state = st.session_state
    state.setdefault("backends", Backends(offline_chunk_delay_s=OFFLINE_CHUNK_DELAY_S))
    state.setdefault("action", None)  # ("send", text) | ("retry",) | ("regenerate",) | ("continue",)
    state.setdefault("notice", None)
    state.setdefault("view", "chat")
    state.setdefault("store_error", None)
    state.setdefault("stale", False)  # the open conversation was saved elsewhere since it was read
    state.setdefault("deleted", None)  # (conversation id, title) of the last deleted, for undo


def save(workspace: Workspace, key: str) -> str:
    """Write the conversation through to the store; a failure is shown and nothing is lost."""
    try:
        key = workspace.save(key)
    except StaleConversation as error:
        st.session_state.store_error = str(error)
        st.session_state.stale = True
    except DashboardError as error:
        st.session_state.store_error = tr("store.unsaved", error=error)
    else:
        st.session_state.store_error = None
        st.session_state.stale = False
    return key


def start_new(workspace: Workspace, persona: Persona, backend: ChatBackend) -> None:
    workspace.new(persona, backend)  # a callback returns nothing; `new` returns the draft's key


def queue(*action: str) -> None:
    st.session_state.action = action


def open_conversation(workspace: Workspace, conversation_id: str, backend: ChatBackend) -> None:
    try:
        workspace.open(conversation_id, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", tr("notice.open_failed", error=error))
        return
    persona_id = workspace.sessions[conversation_id].conversation.persona_id
    if persona_id in st.session_state.catalog_ids:  # a search may list another persona's
        st.session_state.persona_id = persona_id


def rename_conversation(workspace: Workspace, conversation_id: str) -> None:
    title = st.session_state.get(f"title::{conversation_id}", "")
    try:
        workspace.rename(conversation_id, title)
    except DashboardError as error:
        st.session_state.notice = ("error", tr("notice.not_renamed", error=error))


def delete_conversation(workspace: Workspace, conversation_id: str, title: str) -> None:
    try:
        workspace.delete(conversation_id)
    except DashboardError as error:
        st.session_state.notice = ("error", tr("notice.not_deleted", error=error))
        return
    st.session_state.deleted = (conversation_id, title)


def undo_delete(workspace: Workspace, backend: ChatBackend) -> None:
    conversation_id, title = st.session_state.deleted
    st.session_state.deleted = None
    try:
        workspace.restore(conversation_id, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", tr("notice.not_restored", title=title, error=error))


def reload_conversation(workspace: Workspace, key: str, backend: ChatBackend) -> None:
    workspace.reload(key, backend)
    st.session_state.store_error = None
    st.session_state.stale = False


def import_conversation(catalog: PersonaCatalog, workspace: Workspace, backend: ChatBackend) -> None:
    """on_change of the uploader: runs before the page, so it may switch the persona selector.
    The file becomes a new conversation; nothing is overwritten."""
    uploaded = st.session_state.get("import_file")
    if uploaded is None:
        return
    try:
        conversation = Conversation.from_json(uploaded.getvalue())
    except ConversationImportError as error:
        st.session_state.notice = ("error", tr("notice.import_failed", file=uploaded.name, error=error))
        return
    target = conversation.persona_id if conversation.persona_id in catalog.personas else None
    target = target or st.session_state.persona_id
    conversation.persona_id = target
    try:
        workspace.add_imported(conversation, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", tr("notice.import_failed", file=uploaded.name, error=error))
        return
    st.session_state.persona_id = target
    st.session_state.notice = (
        "success",
        tr(
            "notice.imported",
            count=len(conversation.messages),
            file=uploaded.name,
            persona=catalog.personas[target].name,
        ),
    )


# --- sidebar -----------------------------------------------------------------------------------


def conversation_list(workspace: Workspace, persona: Persona, key: str, backend: ChatBackend) -> None:
    """This persona's conversations, newest first, with search, rename and delete (undoable)."""
    st.button(
        tr("conversations.new"),
        icon="🆕",
        on_click=start_new,
        args=(workspace, persona, backend),
        width="stretch",
        disabled=key.startswith(DRAFT_PREFIX) and len(workspace.sessions[key].conversation.messages) < 2,
    )
    deleted = st.session_state.deleted
    if deleted is not None:
        st.info(tr("conversations.deleted", title=deleted[1]), icon="🗑️")
        st.button(
            tr("conversations.undo_delete"),
            icon="↩️",
            on_click=undo_delete,
            args=(workspace, backend),
            key="undo_delete",
        )
    if workspace.store is None:
        return
    search = st.text_input(
        tr("conversations.search.label"),
        key="conversation_search",
        placeholder=tr("conversations.search.placeholder"),
        label_visibility="collapsed",
    )
    try:
        listed = workspace.list(persona_id=None if search else persona.id, search=search or None)
    except DashboardError as error:
        st.error(tr("conversations.list_failed", error=error))
        return
    if search and not listed:
        st.caption(tr("conversations.no_match"))
    for summary in listed[:CONVERSATIONS_LISTED]:
        is_open = summary.id == key
        st.button(
            page_markdown(("▸ " if is_open else "") + summary.display_title),
            key=f"open::{summary.id}",
            on_click=open_conversation,
            args=(workspace, summary.id, backend),
            disabled=is_open,
            width="stretch",
            help=tr("conversations.item.help", count=summary.message_count - 1, updated=summary.updated_at),
        )
    if len(listed) > CONVERSATIONS_LISTED:
        st.caption(tr("conversations.older", count=len(listed) - CONVERSATIONS_LISTED))
    if key in workspace.handles:
        with st.expander(tr("conversations.manage")):
            current = next((c for c in listed if c.id == key), None)
            title = current.display_title if current else ""
            st.text_input(tr("conversations.title"), value=title, key=f"title::{key}", max_chars=200)
            columns = st.columns(2)
            columns[0].button(
                tr("conversations.rename"),
                on_click=rename_conversation,
                args=(workspace, key),
                width="stretch",
            )
            columns[1].button(
                tr("conversations.delete"),
                icon="🗑️",
                on_click=delete_conversation,
                args=(workspace, key, title),
                width="stretch",
                key="delete_conversation",
            )


def base_url_field(mode: AccessMode, allowed: list[str]) -> None:
    """Any base URL on your own machine; on a public deployment only the deployer's choices."""
    if mode == "single-user":
        st.text_input(
            tr("sidebar.base_url.label"),
            key="base_url",
            placeholder="https://api.openai.com/v1",
            help=tr("sidebar.base_url.help"),
        )
        return
    choices = base_url_choices(allowed)
    if not choices:
        st.session_state.base_url = ""
        st.caption(tr("sidebar.base_url.locked"))
        return
    if st.session_state.get("base_url") not in ("", *choices):
        st.session_state.base_url = ""
    st.selectbox(
        tr("sidebar.base_url.label"),
        ["", *choices],
        key="base_url",
        format_func=lambda url: url or tr("sidebar.base_url.deployer"),
        help=tr("sidebar.base_url.help"),
    )


def visitor_connection(mode: AccessMode, secrets: dict[str, object], allowed: list[str]) -> Connection:
    """The connection the visitor's settings make; a refused base URL falls back to the
    deployer's own connection, saying why."""
    typed_key = st.session_state.get("api_key", "")
    try:
        return resolve_connection(
            typed_key=typed_key,
            typed_base_url=st.session_state.get("base_url", ""),
            secrets=secrets,
            environ=os.environ,
            access_mode=mode,
            allowed_base_urls=allowed,
        )
    except BaseUrlRefused as error:
        st.error(tr("sidebar.base_url.refused", error=str(error)))
    except DashboardError as error:  # a deployer's setting is malformed
        st.error(page_markdown(str(error)))
        st.stop()
    return resolve_connection(
        typed_key=typed_key, secrets=secrets, environ=os.environ, access_mode=mode, allowed_base_urls=allowed
    )


def sidebar(catalog: PersonaCatalog, workspace: Workspace) -> tuple[Persona, str, ChatSession, Connection]:
    with st.sidebar:
        language_switch()
        st.header(tr("sidebar.persona.header"))
        persona_ids = list(catalog.personas)
        persona_id = st.selectbox(
            tr("sidebar.persona.label"),
            persona_ids,
            format_func=lambda pid: f"{catalog.personas[pid].avatar} {catalog.personas[pid].name}",
            key="persona_id",
            label_visibility="collapsed",
        )
        persona = catalog.personas[persona_id]
        st.caption(page_markdown(persona.description))
        conversations = st.container()
        if catalog.errors:
            with st.expander(tr("sidebar.persona_errors", count=len(catalog.errors)), expanded=True):
                for error in catalog.errors:
                    st.error(page_markdown(str(error)), icon="📄")

        st.header(tr("sidebar.connection.header"))
        st.text_input(
            tr("sidebar.api_key.label"),
            type="password",
            key="api_key",
            help=tr("sidebar.api_key.help"),
        )
        mode, secrets = current_access().mode, deployer_secrets()
        try:
            allowed = allowed_base_urls_from(secrets, os.environ)
            limits = DeployerLimits.from_settings(secrets, os.environ)
        except DashboardError as error:  # a deployer's setting is malformed
            st.error(page_markdown(str(error)))
            st.stop()
        base_url_field(mode, allowed)
        connection = visitor_connection(mode, secrets, allowed)
        backend = st.session_state.backends.for_connection(connection)
        key, session = workspace.session_for(persona, backend)
        with conversations:
            conversation_list(workspace, persona, key, backend)
        settings = session.settings
        # On the deployer's key, the deployer's limits: a choice of models, capped budgets.
        limited = connection.uses_deployer_key
        if limited:
            enforced, notes = limits.enforce(settings)
            if notes:
                settings = session.update_settings(**enforced.model_dump())
                key = save(workspace, key)
                for note in notes:
                    st.caption(tr("sidebar.limits.applied", note=note))
        if limited and limits.allowed_models:
            models = list(limits.allowed_models)
            model = st.selectbox(
                tr("sidebar.model.label"),
                models,
                index=models.index(settings.model) if settings.model in models else 0,
                key=f"model::{key}",
                help=tr("sidebar.model.help", model=persona.model),
            )
        else:
            model = st.text_input(
                tr("sidebar.model.label"),
                value=settings.model,
                key=f"model::{key}",
                max_chars=MAX_MODEL_NAME,
                help=tr("sidebar.model.help", model=persona.model),
            )
        if connection.offline:
            st.info(tr("connection.offline"), icon="🔌")
        else:
            key_note = tr(f"connection.key_source.{connection.key_source or 'none'}")
            failed = session.error if isinstance(session.error, CONNECTION_ERRORS) else None
            if failed is None:
                st.success(tr("connection.connected", host=connection.host, key_source=key_note), icon="🔗")
            else:  # never a green "connected" beside "could not connect"
                st.warning(tr("connection.failing", host=connection.host, key_source=key_note), icon="🔗")

        st.header(tr("sidebar.budget.header"))
        budget = st.number_input(
            tr("sidebar.budget.label"),
            min_value=64,
            max_value=limits.max_context_budget if limited else MAX_CONTEXT_BUDGET,
            value=min(settings.context_budget, limits.max_context_budget if limited else MAX_CONTEXT_BUDGET),
            step=64,
            key=f"budget::{key}",
            help=tr("sidebar.budget.help"),
        )
        reply_cap = st.number_input(
            tr("sidebar.reply_cap.label"),
            min_value=1,
            max_value=limits.max_reply_cap if limited else MAX_REPLY_CAP,
            value=min(settings.max_reply_tokens, limits.max_reply_cap if limited else MAX_REPLY_CAP),
            step=50,
            key=f"reply_cap::{key}",
            help=tr("sidebar.reply_cap.help"),
        )
        # Labels fixed for this run: Streamlit (and AppTest) may format an option outside the run.
        policy_labels = {name: tr(f"policy.{name}") for name in POLICY_NAMES}
        policy = st.selectbox(
            tr("sidebar.policy.label"),
            list(POLICY_NAMES),
            index=POLICY_NAMES.index(settings.context_policy),
            format_func=policy_labels.__getitem__,
            key=f"policy::{key}",
            help=tr("sidebar.policy.help"),
        )
        try:
            changed = session.update_settings(
                model=model.strip() or persona.model,
                context_budget=int(budget),
                max_reply_tokens=int(reply_cap),
                context_policy=policy,
            )
        except InvalidSettings as error:  # the previous settings stay
            st.error(page_markdown(str(error)))
            changed = settings
        if changed is not settings:  # saved with the conversation, so a reload keeps them
            key = save(workspace, key)
        st.session_state.limits = limits if limited else None

        st.header(tr("sidebar.export.header"))
        conversation = session.conversation
        columns = st.columns(2)
        columns[0].download_button(
            "JSON",
            conversation.to_json,  # built when clicked, not on every rerun
            file_name=f"{persona.id}-conversation.json",
            mime="application/json",
            icon="⬇️",
            on_click="ignore",
            width="stretch",
        )
        columns[1].download_button(
            "Markdown",
            functools.partial(conversation.to_markdown, f"{persona.avatar} {persona.name}"),
            file_name=f"{persona.id}-conversation.md",
            mime="text/markdown",
            icon="⬇️",
            on_click="ignore",
            width="stretch",
        )
        st.file_uploader(
            tr("sidebar.import.label"),
            type=["json"],
            key="import_file",
            on_change=import_conversation,
            args=(catalog, workspace, backend),
            max_upload_size=max(1, MAX_IMPORT_BYTES // (1024 * 1024)),
        )
        html_lang()
    return persona, key, session, connection


# --- chat --------------------------------------------------------------------------------------


def render_message(message: Message, persona: Persona) -> None:
    if message.automatic:  # the dashboard's own request to continue a cut reply
        st.caption(tr("chat.continued", preview=message.preview(80)))
        return
    avatar = persona.avatar if message.role == "assistant" else "🧑"
    with st.chat_message(message.role, avatar=avatar):
        if message.state in BADGE_COLORS:
            st.badge(tr(f"state.{message.state.value}"), color=BADGE_COLORS[message.state])
        if message.interrupted:
            st.badge(tr("chat.badge.interrupted"), color="orange")
        if message.cut_off:
            st.badge(tr("chat.badge.cut_off"), color="orange")
        if message.pinned:
            st.badge(tr("chat.badge.pinned"), color="blue", icon="📌")
        # Markdown without HTML: user, persona and model text is never rendered as raw HTML.
        if message.state is MessageState.CONTEXT:
            st.markdown(page_markdown(message.content))
        else:
            st.caption(page_markdown(message.content))


def stream_reply(
    workspace: Workspace, key: str, persona: Persona, reply: Callable[[], Iterator[str]]
) -> None:
    """Stream a reply into the chat and save the turn; every outcome ends in a rerun, which
    redraws the history (with this turn's trims, badges and any error) and the dashboard."""
    session = workspace.sessions[key]
    with st.chat_message("assistant", avatar=persona.avatar):
        try:
            show_streaming(reply())
        except DashboardError:
            pass  # the session holds the error; the rerun shows it
        except BaseException:
            # Stopped (the chat input's stop button) or interrupted by another interaction:
            # keep what streamed, hang up on the server, and save what was kept.
            session.stop()
            save(workspace, key)
            raise
    save(workspace, key)
    st.rerun()


def render_summary(workspace: Workspace, key: str) -> None:
    """The running summary where the folded messages end: what the model is sent instead of
    them, its versions, and an editor (the model sees the edited version from the next call)."""
    conversation = workspace.sessions[key].conversation
    summary = conversation.summary
    if summary is None:
        return
    folded = sum(len(event.folded) for event in conversation.summary_events)
    with st.expander(tr("summary.title", count=folded, tokens=summary.tokens), icon="📝"):
        st.markdown(page_markdown(summary.text))
        for number, version in enumerate(summary.versions, start=1):
            source = tr(f"summary.source.{version.source}")
            st.caption(tr("summary.version", number=number, source=source, at=version.at))
        edited = st.text_area(
            tr("summary.edit.label"), value=summary.text, key=f"summary::{key}::{len(summary.versions)}"
        )
        if edited.strip() and edited != summary.text:
            st.caption(tr("summary.edit.tokens", tokens=conversation.count_summary(edited)))
        if st.button(tr("summary.edit.save"), key=f"summary_save::{key}", disabled=edited == summary.text):
            try:
                conversation.edit_summary(edited)
            except DashboardError as error:
                st.error(page_markdown(str(error)))
                return
            save(workspace, key)
            st.rerun()


def show_streaming(chunks: Iterator[str]) -> None:
    """Draw a reply as it arrives, at most every STREAM_REDRAW_S: each redraw sends the whole text
    so far to the browser, so redrawing per chunk (as st.write_stream does) would cost memory
    and bandwidth in proportion to the reply times its chunks."""
    placeholder = st.empty()
    text, drawn_at = "", 0.0
    for chunk in chunks:
        text += chunk
        if time.monotonic() - drawn_at >= STREAM_REDRAW_S:
            placeholder.markdown(page_markdown(text) + " ▌")
            drawn_at = time.monotonic()
    placeholder.markdown(page_markdown(text))


def error_details(error: DashboardError) -> str:
    """The data an error carries, in one line: status, how long to wait, the server's request id."""
    if not isinstance(error, BackendError):
        return ""
    parts = [tr("error.details.status", status=error.status_code)] if error.status_code else []
    if error.retry_after:
        parts.append(tr("error.details.wait", seconds=error.retry_after))
    if error.request_id:
        parts.append(tr("error.details.request_id", request_id=error.request_id))
    if not error.retryable:
        parts.append(tr("error.details.not_retryable"))
    return " · ".join(parts)


def chat(workspace: Workspace, key: str, persona: Persona) -> None:
    session = workspace.sessions[key]
    conversation = session.conversation
    # The history scrolls in a box of its own, so the dashboard stays in view beside the newest
    # messages; errors and buttons, then the chat input, sit under it. The input is not pinned
    # to the page bottom, so the page opens at the top (and on a phone, with the chat first).
    history_box = st.container(height=CHAT_HEIGHT_PX, border=False)
    controls = st.container()
    limits: DeployerLimits | None = st.session_state.get("limits")
    prompt = st.chat_input(
        tr("chat.input.placeholder", name=persona.name),
        key="chat_input",
        submit_mode="stop",
        max_chars=limits.max_message_chars if limits else None,
    )
    with history_box:
        history = conversation.messages[1:]
        hidden = max(len(history) - HISTORY_SHOWN, 0)
        # Every rerun redraws the chat: past a few hundred messages, draw the oldest on request.
        if hidden and not st.toggle(
            tr("chat.show_earlier.label", count=hidden),
            key=f"show_all::{key}",
            help=tr("chat.show_earlier.help"),
        ):
            history = history[hidden:]
        elif persona.greeting:
            with st.chat_message("assistant", avatar=persona.avatar):
                st.markdown(page_markdown(persona.greeting))
        summary = conversation.summary
        if summary is not None and summary.through_id is None:
            render_summary(workspace, key)
        for message in history:
            render_message(message, persona)
            if summary is not None and message.id == summary.through_id:
                render_summary(workspace, key)
        for event in conversation.summary_events:
            if event.fallback:
                st.caption(tr("summary.fallback", turn=event.turn, reason=event.fallback_reason or "?"))

        action = st.session_state.action
        st.session_state.action = None
        if prompt:
            action = ("send", prompt)
        if action and limits is not None and not admitted(workspace, key, limits, action):
            action = None
        if action and action[0] == "send":
            with st.chat_message("user", avatar="🧑"):
                st.markdown(page_markdown(action[1]))
            stream_reply(workspace, key, persona, lambda: session.send(action[1]))
        elif action == ("retry",) and session.can_retry:
            stream_reply(workspace, key, persona, session.retry)
        elif action == ("regenerate",) and session.can_regenerate:
            stream_reply(workspace, key, persona, session.regenerate)
        elif action == ("continue",) and session.can_continue:
            stream_reply(workspace, key, persona, session.continue_reply)

    with controls:
        chat_controls(session, persona)
        pins(workspace, key)


def admitted(workspace: Workspace, key: str, limits: DeployerLimits, action: tuple[str, ...]) -> bool:
    """The deployer's per-session rate limit, checked before a call on the deployer's key. A
    refused message is kept, pending, for Retry."""
    session = workspace.sessions[key]
    limiter = st.session_state.get("rate_limiter")
    if limiter is None:
        limiter = st.session_state.rate_limiter = limits.rate_limiter()
    text = action[1] if action[0] == "send" else ""
    expected = session.conversation.prompt_tokens + session.settings.max_reply_tokens
    try:
        limiter.check(expected + session.conversation.tokenizer.count_text(text))
    except RateLimitedLocally as error:
        if text:
            session.conversation.add_user(text)
            save(workspace, key)
        session.error = error
        return False
    return True


def chat_controls(session: ChatSession, persona: Persona) -> None:
    """The last call's error with its data, starter prompts, and Retry / Regenerate / Continue."""
    conversation = session.conversation
    if session.error is not None:
        st.error(page_markdown(str(session.error)), icon="⚠️")
        if details := error_details(session.error):
            st.caption(details)
    if not conversation.turns and not conversation.pending_user_message and persona.starter_prompts:
        st.caption(tr("chat.starters"))
        for index, starter in enumerate(persona.starter_prompts):
            st.button(
                page_markdown(starter),
                key=f"starter::{persona.id}::{index}",
                on_click=queue,
                args=("send", starter),
            )
    if session.can_retry:
        st.button(tr("chat.retry"), icon="🔁", on_click=queue, args=("retry",), key="retry")
    elif session.can_regenerate:
        columns = st.columns(2) if session.can_continue else [st.container()]
        columns[0].button(
            tr("chat.regenerate"), icon="🔄", on_click=queue, args=("regenerate",), key="regenerate"
        )
        if session.can_continue:
            columns[1].button(
                tr("chat.continue"), icon="⏩", on_click=queue, args=("continue",), key="continue"
            )


def pins(workspace: Workspace, key: str) -> None:
    """Pin messages in context: no policy drops or summarizes a pinned message (one widget for
    the whole chat, not a button per message, so long chats stay quick)."""
    conversation = workspace.sessions[key].conversation
    candidates = [m for m in conversation.context_messages()[1:] if not m.automatic]
    if not candidates:
        return
    labels = {m.id: f"{'🧑' if m.role == 'user' else '🤖'} {m.preview(70)}" for m in candidates}
    with st.expander(tr("pins.header", count=sum(m.pinned for m in candidates)), icon="📌"):
        chosen = st.multiselect(
            tr("pins.label"),
            list(labels),
            default=[m.id for m in candidates if m.pinned],
            format_func=labels.__getitem__,
            key=f"pins::{key}::{len(conversation.messages)}",
            help=tr("pins.help"),
        )
        changed = [m for m in candidates if m.pinned != (m.id in chosen)]
        for message in changed:
            conversation.pin(message.id, message.id in chosen)
        if changed:
            save(workspace, key)
            st.rerun()


# --- dashboard ---------------------------------------------------------------------------------


def dashboard(session: ChatSession, connection: Connection) -> None:
    conversation = session.conversation
    # Figures and charts are built once per version of the conversation (a message, turn, trim,
    # pin or setting): a rerun that changed none of them walks no history and builds no chart.
    figures = dashboard_figures(conversation, session.policy, model_table())
    drawing = dashboard_drawing(figures)
    gauge, total = figures.gauge, figures.totals
    st.subheader(tr("dashboard.header"))
    priced = model_table().lookup(conversation.model)
    top, bottom = st.columns(2), st.columns(2)
    over = gauge.used > gauge.budget
    top[0].metric(
        tr("dashboard.in_context.label"),
        f"{gauge.used:,}",
        tr("dashboard.in_context.delta", fraction=gauge.fraction, budget=gauge.budget),
        delta_color="inverse" if over else "off",
        delta_arrow="off",
        help=tr("dashboard.in_context.help"),
    )
    if total.cost is None or priced is None:
        top[1].metric(
            tr("dashboard.cost.label"),
            tr("dashboard.cost.unknown"),
            help=tr("dashboard.cost.unknown_help", model=conversation.model),
        )
    elif connection.offline:
        top[1].metric(
            tr("dashboard.cost.label"),
            tr("dashboard.cost.offline"),
            tr("dashboard.cost.offline_delta", cost=total.cost, model=conversation.model),
            delta_color="off",
            delta_arrow="off",
            help=tr("dashboard.cost.offline_help"),
        )
    else:
        top[1].metric(tr("dashboard.cost.label"), f"${total.cost:.4f}", help=tr("dashboard.cost.help"))
    tokens_in_help = (
        tr("dashboard.tokens_in.help_some_counted")
        if total.includes_counted
        else tr("dashboard.tokens_in.help")
    )
    bottom[0].metric(tr("dashboard.tokens_in.label"), f"{total.prompt_tokens:,}", help=tokens_in_help)
    bottom[1].metric(
        tr("dashboard.tokens_out.label"), f"{total.completion_tokens:,}", help=tr("dashboard.tokens_out.help")
    )

    st.markdown(f"**{tr('dashboard.usage.header')}**")
    if drawing.usage is None:
        st.caption(tr("dashboard.usage.empty"))
    else:
        st.vega_lite_chart(spec=drawing.usage, width="stretch", height=330)
    if connection.offline:
        st.caption(tr("dashboard.usage.offline"))
    if figures.mismatched:
        st.warning(tr("dashboard.usage.mismatch", count=len(figures.mismatched)))
        st.dataframe(drawing.mismatched, hide_index=True)
    elif figures.any_reported:
        st.caption(tr("dashboard.usage.match"))

    st.markdown(f"**{tr('dashboard.gauge.header')}**")
    # As tall as the bar and its legend.
    st.vega_lite_chart(spec=drawing.gauge, width="stretch", height="content")
    parts = " · ".join(f"{tr(f'gauge.part.{part}')} {tokens:,}" for part, tokens in gauge.parts())
    st.caption(tr("dashboard.gauge.parts", parts=parts))
    in_context, drops = figures.in_context, figures.next_drops
    if drops:
        st.caption(
            tr_plural(
                "dashboard.context.drops", in_context, drops=len(drops), preview=figures.next_drop_preview
            )
        )
    else:
        st.caption(tr_plural("dashboard.context.fits", in_context))
    counting_status(session)

    with st.expander(tr("dashboard.next_call.header")):
        st.dataframe(
            drawing.context,
            hide_index=True,
            column_config={
                "tokens": st.column_config.NumberColumn(tr("dashboard.next_call.tokens"), format="%d"),
                "text": st.column_config.TextColumn(tr("dashboard.next_call.text"), width="large"),
            },
        )
        st.caption(tr("dashboard.next_call.total", used=gauge.used))

    st.markdown(f"**{tr('dashboard.trims.header')}**")
    if not figures.trims:
        st.caption(tr("dashboard.trims.empty"))
    else:
        st.dataframe(
            drawing.trims,
            hide_index=True,
            column_config={
                "messages_dropped": tr("dashboard.trims.dropped"),
                "tokens_before": tr("dashboard.trims.before"),
                "tokens_after": tr("dashboard.trims.after"),
                "preview": tr("dashboard.trims.preview"),
            },
        )
    with st.expander(tr("dashboard.turns.header")):
        st.dataframe(drawing.turns, hide_index=True)


def counting_status(session: ChatSession) -> None:
    """Which method counts this conversation's tokens, how far off it may be, and the budget calls
    are really fitted to (capped to the server's context window, less a margin while learning)."""
    status = session.counting.describe(session.conversation)
    if status.method == METHOD_TIKTOKEN:
        label = tr("counting.tiktoken")
    elif status.method == METHOD_SERVER:
        label = tr("counting.server")
    elif status.method.startswith(METHOD_CALIBRATED):
        label = tr(
            "counting.calibrated", error=100 * (status.error or status.margin), turns=status.calibrated_turns
        )
    else:
        label = tr("counting.uncalibrated", model=session.conversation.model)
    (st.caption if status.exact or status.calibrated_turns else st.warning)(label)
    if status.context_window:
        st.caption(tr("counting.window", window=status.context_window))
    if status.budget != status.budget_setting:
        st.caption(tr("counting.budget", budget=status.budget, setting=status.budget_setting))


# --- page --------------------------------------------------------------------------------------


def main() -> None:
    page_language()
    st.set_page_config(page_title=tr("page.name"), page_icon="💬", layout="wide")
    access = current_access()
    if not access.error_details:
        # No traceback or server path for anyone not at this machine. The option is the
        # process's, so once a stranger has visited it stays "none" (never back to a traceback
        # that another session's run could show them).
        st.set_option("client.showErrorDetails", "none")
    session_defaults()
    load_tokenizers()
    directory = personas_dir()
    catalog = persona_catalog(str(directory), directory_stamp(directory))
    model_table()
    freeze_startup_objects()
    if not catalog.personas:
        st.error(tr("page.no_personas", directory=directory))
        for error in catalog.errors:
            st.error(page_markdown(str(error)))
        st.stop()
    workspace = visitor_workspace()
    # The shipped personas, then this visitor's own (which never replace a shipped one).
    own = {pid: p for pid, p in workspace.custom_personas().items() if pid not in catalog.personas}
    catalog = PersonaCatalog(
        catalog.directory, {**catalog.personas, **own}, [*catalog.errors, *workspace.persona_errors]
    )
    st.session_state.catalog_ids = tuple(catalog.personas)
    if st.session_state.get("persona_id") not in catalog.personas:
        st.session_state.persona_id = next(iter(catalog.personas))

    persona, key, session, connection = sidebar(catalog, workspace)
    # The open conversation is in the link, so a reload (or a bookmark) returns to it.
    if key in workspace.handles:
        st.query_params[CONVERSATION_PARAM] = key
    elif CONVERSATION_PARAM in st.query_params:
        del st.query_params[CONVERSATION_PARAM]
    notice = st.session_state.notice
    if notice:
        st.session_state.notice = None
        {"error": st.error, "info": st.info}.get(notice[0], st.success)(page_markdown(notice[1]))
    if st.session_state.store_error:
        st.warning(st.session_state.store_error, icon="💾")
        if st.session_state.stale:
            st.button(
                tr("store.reload.label"),
                on_click=reload_conversation,
                args=(workspace, key, session.backend),
                help=tr("store.reload.help"),
            )

    if access.shared_with_strangers:
        st.warning(tr("access.shared_with_strangers"), icon="👥")
    st.title(page_markdown(f"{persona.avatar} {persona.name}"))
    st.caption(tr("page.tagline"))
    # Labels fixed for this run: Streamlit (and AppTest) may format an option outside the run.
    view_labels = {name: tr(f"views.{name}") for name in VIEWS}
    view = st.segmented_control(
        tr("views.label"),
        list(VIEWS),
        format_func=view_labels.__getitem__,
        key="view",
        label_visibility="collapsed",
    )
    if view == "personas":
        if personas_view.EDITOR_STATE in st.session_state:
            personas_view.editor(catalog.personas)
        else:
            personas_view.gallery(catalog.personas, set(own), workspace.conversation_counts())
        return
    if view == "whatif":
        whatif_view.whatif(session, model_table(), tr)
        return
    if view == "compare":
        if compare_view.STATE in st.session_state:
            compare_view.comparison_view(workspace)
        else:
            compare_view.setup(catalog.personas, workspace, session.backend)
        return
    chat_column, dashboard_column = st.columns([5, 4], gap="large")
    with dashboard_column:
        # Its own scrolling box too: the page fits the window and does not jump on each turn.
        dashboard_slot = st.container(height=DASHBOARD_HEIGHT_PX, border=False)
    with chat_column:
        chat(workspace, key, persona)
    with dashboard_slot:
        dashboard(session, connection)


main()
