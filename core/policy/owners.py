"""Who owns the conversations a session sees.

`ACCESS_MODE=single-user`: one owner, `local`. `ACCESS_MODE=private` (the Docker image sets
it): every visitor gets a private workspace: the signed-in user (issuer + subject) when the
deployer set up OIDC sign-in, else an unguessable private link whose token is stored only as a
hash. With ACCESS_MODE unset, each visitor is placed by `visitor_access`: single-user for the
person at this machine (`is_local_visitor`), private for everyone else, so a deployment with no
settings (Community Cloud, a Space, a LAN address) never trusts a stranger.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from core.errors import ConfigError, DashboardError

AccessMode = Literal["single-user", "private"]
ACCESS_MODES: Final[tuple[AccessMode, ...]] = get_args(AccessMode)
LOCAL_OWNER: Final = "local"
#: The query parameter that carries a private workspace's token.
WORKSPACE_PARAM: Final = "w"
#: What `new_workspace_token` makes: 32 random bytes in unpadded URL-safe base64, 43 characters,
#: the last carrying 4 bits and two zero bits.
_TOKEN_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")
#: 43 random characters of 64 have about 31 different ones; fewer than this is typed, not made.
_TOKEN_MIN_DISTINCT: Final = 12


class InvalidWorkspaceLink(DashboardError, ValueError):
    """A private link's token is malformed (not one this app made)."""


#: The names a browser on this machine addresses the server by. Any other Host (a LAN address, a
#: public name, a DNS-rebinding attacker's name that resolves to 127.0.0.1) is not "this machine".
LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Headers a reverse proxy adds: with any of them the peer on loopback is a proxy, not the visitor.
FORWARDING_HEADERS: Final = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-original-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-envoy-external-address",
        "via",
    }
)


@dataclass(frozen=True)
class VisitorAccess:
    """How one browser session is treated."""

    #: What the session gets: single-user (the shared `local` workspace, any base URL) or private.
    mode: AccessMode
    #: The visitor is on this machine (see `is_local_visitor`).
    local: bool

    @property
    def shared_with_strangers(self) -> bool:
        """The deployer chose single-user and this visitor is not on this machine: everyone with
        the link sees the same conversations, and the page must say so."""
        return self.mode == "single-user" and not self.local

    @property
    def error_details(self) -> bool:
        """Whether the visitor may see tracebacks (server paths, code): only on this machine."""
        return self.local


def _host_name(authority: str) -> str:
    """`authority` (a Host header or an Origin's netloc) without its port, lower-cased."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _is_loopback_peer(ip_address: str | None) -> bool:
    if ip_address is None:  # how st.context.ip_address reports a loopback peer
        return True
    try:
        peer = ipaddress.ip_address(ip_address.split("%", 1)[0])
    except ValueError:
        return False
    # A dual-stack server sees an IPv4 client as IPv4-mapped (`::ffff:127.0.0.1`, how Streamlit
    # reports a browser on http://127.0.0.1), which `is_loopback` alone does not count.
    mapped = peer.ipv4_mapped if isinstance(peer, ipaddress.IPv6Address) else None
    return peer.is_loopback or (mapped is not None and mapped.is_loopback)


def is_local_visitor(ip_address: object, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether the browser session is the person at this machine.

    `ip_address` is the connection's peer as `st.context.ip_address` gives it (None for a
    loopback peer), `headers` the WebSocket handshake's (`st.context.headers`). Local means all
    of: the peer is loopback; the Host the browser addressed is localhost, 127.0.0.1 or [::1]
    (any port), so a DNS-rebinding page in the local user's browser, whose Host is its own name,
    is not local; an Origin, when sent, names one of those too (a page elsewhere opening a
    WebSocket to localhost); and no forwarding header says a proxy relayed someone else. No
    headers at all (no real connection, e.g. under AppTest) is not local.
    """
    if not (ip_address is None or isinstance(ip_address, str)) or not _is_loopback_peer(ip_address):
        return False
    hosts: list[str] = []
    for name, value in headers:
        name = name.strip().lower()
        if name in FORWARDING_HEADERS:
            return False
        if name == "host":
            hosts.append(_host_name(value))
        elif name == "origin" and value.strip().lower() != "null":
            try:
                origin = urlsplit(value.strip())
            except ValueError:
                return False
            if _host_name(origin.netloc) not in LOCAL_HOSTS:
                return False
    return len(hosts) == 1 and hosts[0] in LOCAL_HOSTS


def access_setting(environ: Mapping[str, str]) -> AccessMode | None:
    """The deployer's ACCESS_MODE; None when unset (each visitor placed by `visitor_access`)."""
    raw = environ.get("ACCESS_MODE", "").strip().lower()
    if not raw:
        return None
    for mode in ACCESS_MODES:
        if raw == mode:
            return mode
    modes = ", ".join(ACCESS_MODES)
    raise ConfigError("ACCESS_MODE", f"The setting ACCESS_MODE must be one of {modes}, not {raw!r}.").coded(
        "config_access_mode", value=raw, modes=modes
    )


def visitor_access(environ: Mapping[str, str], *, local: bool) -> VisitorAccess:
    """How a visitor is treated: the deployer's ACCESS_MODE when set; with none, single-user for
    the person at this machine and private for everyone else."""
    setting = access_setting(environ)
    if setting is None:
        setting = "single-user" if local else "private"
    return VisitorAccess(mode=setting, local=local)


def new_workspace_token() -> str:
    """A fresh private-link token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def owner_for_token(token: str) -> str:
    """The owner a private link stands for. Only the token's hash is ever stored."""
    if not _TOKEN_PATTERN.fullmatch(token) or len(set(token)) < _TOKEN_MIN_DISTINCT:
        raise InvalidWorkspaceLink(
            "This private link is not valid (it was cut short or changed). Open the link you "
            "bookmarked, or start a new workspace."
        ).coded("workspace_link_invalid")
    return "link:" + hashlib.sha256(token.encode()).hexdigest()


def owner_for_user(issuer: str, subject: str) -> str:
    """The owner of a user signed in with OIDC: the identity provider and its id for the user."""
    if not issuer or not subject:
        raise DashboardError("The sign-in did not say who you are (no issuer or subject).").coded(
            "signin_no_identity"
        )
    return f"oidc:{issuer}|{subject}"
