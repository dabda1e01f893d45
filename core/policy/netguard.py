"""Which base URLs a visitor may type, and where the server may connect for them.

A base URL typed into the sidebar is a request the *server* makes. On a public deployment
(`ACCESS_MODE=private`) that is a server-side request forgery waiting to happen, so:

- `typed_base_url_allowed` refuses a typed URL unless it matches the deployer's
  `ALLOWED_BASE_URLS` (URL prefixes or hosts, `parse_allowed_base_urls`); in `single-user` mode
  (the default: one person running the app for themselves, e.g. against a local Ollama) any
  http(s) URL goes.
- `PublicOnlyTransport` is the HTTP transport for such a URL: on every new connection it resolves
  the host, refuses it when any address is loopback, private, link-local, shared (CGNAT),
  multicast, unspecified, reserved or a cloud metadata address (`address_refusal`), and then
  connects to the very address it checked, so a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot switch it to an internal one. It ignores proxy settings from
  the environment (a proxy would resolve the host itself).

Redirects and server texts are handled by the backend (the OpenAI-compatible backend,
`core.providers.backends`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpcore2
import httpx2
import openai
from httpcore2._types import SOCKET_OPTION

from core.errors import BaseUrlRefused, ConfigError
from core.notices import Notice
from core.policy.owners import AccessMode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata services, refused by name in messages (most are link-local anyway; Azure's
#: wire server and Alibaba's are not).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

# Characters that URL parsers disagree about (or that never belong in a base URL).
_UNSAFE_URL_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f@]")
_HOST_ENTRY = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:\d{1,5})?$")


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str  # lower-case, no trailing dot, IPv6 without brackets
    port: int | None  # None: the scheme's default
    path: str  # without a trailing slash; "" for the root

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.scheme == "https" else 80)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}{self.path}"


class BadUrl(ValueError):
    """What is wrong with a base URL: str() in English, `reason` for the page (`notice.url_<…>`)."""

    def __init__(self, reason: Notice, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _parse_url(url: str) -> _Url:
    """An http(s) base URL, strictly: no user info, query, fragment, dot segments or characters
    that parsers read differently. Raises `BadUrl` saying what is wrong."""
    if _UNSAFE_URL_CHARS.search(url):
        raise BadUrl(
            Notice(code="url_characters"), "it contains spaces, backslashes, control characters or an '@'"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadUrl(Notice(code="url_scheme"), "it must start with http:// or https://")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise BadUrl(Notice(code="url_query"), "a base URL has no query (?…) or fragment (#…)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BadUrl(Notice(code="url_host"), "it has no host")
    try:
        port = parts.port
    except ValueError as exc:  # not a number in 0..65535
        raise BadUrl(Notice(code="url_port"), str(exc)) from None
    if port is not None and port == (443 if scheme == "https" else 80):
        port = None
    segments = unquote(parts.path).split("/")
    if any(segment in (".", "..") for segment in segments):
        raise BadUrl(Notice(code="url_dots"), "it has '.' or '..' path segments")
    return _Url(scheme, host.lower(), port, parts.path.rstrip("/"))


def parse_allowed_base_urls(raw: str, *, setting: str = "ALLOWED_BASE_URLS") -> list[str]:
    """The deployer's ALLOWED_BASE_URLS: URL prefixes (``https://api.example.com/v1``) or hosts
    (``api.example.com``, ``api.example.com:8443``), separated by commas or newlines.

    Returns the entries normalized (lower-case scheme and host, no default port, no trailing
    slash), duplicates dropped. A malformed entry is a ConfigError naming it.
    """
    entries: list[str] = []
    for item in re.split(r"[,\n]", raw):
        entry = item.strip()
        if not entry or entry.startswith("#"):
            continue
        if "://" in entry:
            try:
                normalized = str(_parse_url(entry))
            except BadUrl as exc:
                raise ConfigError(
                    setting, f"{setting}: {entry[:80]!r} is not a usable base URL: {exc}."
                ).coded("config_base_url", setting=setting, value=entry[:80], reason=exc.reason) from None
        else:
            normalized = entry.lower().rstrip(".")
            match = _HOST_ENTRY.match(normalized)
            if not match or (match[2] and not 0 < int(match[2][1:]) < 65536):
                raise ConfigError(
                    setting,
                    f"{setting}: {entry[:80]!r} is neither a URL (https://host/path) nor a host "
                    "(host or host:port).",
                ).coded("config_host", setting=setting, value=entry[:80])
        if normalized not in entries:
            entries.append(normalized)
    return entries


def allowed_base_urls_from(secrets: Mapping[str, object], environ: Mapping[str, str]) -> list[str]:
    """ALLOWED_BASE_URLS from Streamlit secrets (a string or a TOML list), else the environment."""
    raw = secrets.get("ALLOWED_BASE_URLS")
    if isinstance(raw, list | tuple):
        raw = ",".join(str(item) for item in raw)
    if not isinstance(raw, str) or not raw.strip():
        raw = environ.get("ALLOWED_BASE_URLS", "")
    return parse_allowed_base_urls(raw)


def base_url_choices(allowed: Iterable[str]) -> list[str]:
    """The entries of an allowlist that are whole base URLs (to offer as choices); host entries
    are accepted when typed but are not URLs by themselves."""
    return [entry for entry in allowed if "://" in entry]


def base_url_matches(url: str, entry: str) -> bool:
    """Whether a typed base URL falls under one normalized allowlist entry.

    A URL entry matches the same scheme, host and port, and its path or a path below it (whole
    segments: ``/v1`` matches ``/v1`` and ``/v1/x``, not ``/v1x``). A host entry matches that host
    over http or https, on the entry's port if it names one.
    """
    try:
        typed = _parse_url(url)
    except ValueError:
        return False
    if "://" in entry:
        try:
            allowed = _parse_url(entry)
        except ValueError:
            return False
        return (typed.scheme, typed.host, typed.effective_port) == (
            allowed.scheme,
            allowed.host,
            allowed.effective_port,
        ) and (typed.path == allowed.path or typed.path.startswith(allowed.path + "/"))
    match = _HOST_ENTRY.match(entry)
    if not match:
        return False
    host = match[1].strip("[]")
    port = int(match[2][1:]) if match[2] else None
    return typed.host == host and (port is None or typed.effective_port == port)


def typed_base_url_allowed(url: str, *, access_mode: AccessMode, allowed: Sequence[str]) -> None:
    """Raise BaseUrlRefused unless a visitor may use this typed base URL.

    `single-user`: any URL (the SDK reports one it cannot use). `private`: only an http(s) URL
    matching an entry of `allowed` (the deployer's ALLOWED_BASE_URLS); with no entries, none.
    """
    if access_mode != "private":
        return
    shown = url if len(url) <= 80 else url[:79] + "…"
    if not allowed:
        raise BaseUrlRefused(
            url,
            "This deployment does not let visitors choose a base URL; clear the Base URL field to "
            "use the app's own connection.",
        ).coded("base_url_not_chosen")
    try:
        _parse_url(url)
    except BadUrl as exc:
        raise BaseUrlRefused(url, f"The base URL {shown!r} cannot be used: {exc}.").coded(
            "base_url_unusable", url=shown, reason=exc.reason
        ) from None
    if not any(base_url_matches(url, entry) for entry in allowed):
        raise BaseUrlRefused(
            url,
            f"The base URL {shown!r} is not one this deployment allows. Allowed: {', '.join(allowed)}.",
        ).coded("base_url_not_allowed", url=shown, allowed=", ".join(allowed))


# --- addresses ---------------------------------------------------------------------------------


def address_refusal(address: str | IPAddress) -> str | None:
    """Why the server must not connect to `address` for a visitor (e.g. "a loopback address"),
    or None when it is a public unicast address. IPv6 forms that embed an IPv4 address
    (mapped, 6to4, Teredo, NAT64) are judged by the embedded address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: IPAddress | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and any(ip in network for network in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(embedded)
            if reason is not None:
                return reason
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved, non-public address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved, non-public address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class RefusedAddressError(openai.OpenAIError):
    """Raised inside the SDK's request when the host resolves to a refused address.

    An `openai.OpenAIError` on purpose: the SDK passes those through without retrying.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address}, {reason}")
        self.host = host
        self.address = address
        self.reason = reason


Resolver = Callable[[str, int], list[str]]
Refusal = Callable[[str], str | None]


class PublicAddressBackend(httpcore2.SyncBackend):
    """httpcore's socket backend, but every TCP connection first resolves the host, refuses it
    when any address is refused (`address_refusal`), then connects to the checked address itself.

    `resolver` and `refusal` are replaceable for tests.
    """

    def __init__(self, *, resolver: Resolver = resolve, refusal: Refusal = address_refusal) -> None:
        self._resolver = resolver
        self._refusal = refusal

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore2.NetworkStream:
        try:
            addresses = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        if not addresses:
            raise httpcore2.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            reason = self._refusal(address)
            if reason is not None:
                raise RefusedAddressError(host, address, reason)
        failure: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure


_DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20)


class PublicOnlyTransport(httpx2.HTTPTransport):
    """An HTTP transport whose connections go only to public addresses (`PublicAddressBackend`),
    never through a proxy from the environment."""

    def __init__(
        self,
        *,
        network_backend: httpcore2.NetworkBackend | None = None,
        limits: httpx2.Limits | None = None,
    ) -> None:
        limits = limits or _DEFAULT_LIMITS
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network_backend or PublicAddressBackend(),
        )
