"""Who owns the conversations a session sees.

`ACCESS_MODE=single-user` (the default for `streamlit run` on your own machine): one owner,
`local`. `ACCESS_MODE=private` (the default in the Docker image): every visitor gets a private
workspace: the signed-in user (issuer + subject) when the deployer set up OIDC sign-in, else an
unguessable private link whose token is stored only as a hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Final, Literal, get_args

from core.errors import ConfigError, DashboardError

AccessMode = Literal["single-user", "private"]
ACCESS_MODES: Final[tuple[AccessMode, ...]] = get_args(AccessMode)
LOCAL_OWNER: Final = "local"
#: The query parameter that carries a private workspace's token.
WORKSPACE_PARAM: Final = "w"
_TOKEN_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


class InvalidWorkspaceLink(DashboardError, ValueError):
    """A private link's token is malformed (not one this app made)."""


def access_mode(environ: Mapping[str, str]) -> AccessMode:
    """The deployer's ACCESS_MODE; single-user when unset."""
    raw = environ.get("ACCESS_MODE", "").strip().lower() or "single-user"
    for mode in ACCESS_MODES:
        if raw == mode:
            return mode
    raise ConfigError(
        "ACCESS_MODE", f"The setting ACCESS_MODE must be one of {', '.join(ACCESS_MODES)}, not {raw!r}."
    )


def new_workspace_token() -> str:
    """A fresh private-link token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def owner_for_token(token: str) -> str:
    """The owner a private link stands for. Only the token's hash is ever stored."""
    if not _TOKEN_PATTERN.fullmatch(token):
        raise InvalidWorkspaceLink(
            "This private link is not valid (it was cut short or changed). Open the link you "
            "bookmarked, or start a new workspace."
        )
    return "link:" + hashlib.sha256(token.encode()).hexdigest()


def owner_for_user(issuer: str, subject: str) -> str:
    """The owner of a user signed in with OIDC: the identity provider and its id for the user."""
    if not issuer or not subject:
        raise DashboardError("The sign-in did not say who you are (no issuer or subject).")
    return f"oidc:{issuer}|{subject}"
