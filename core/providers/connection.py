"""Which backend a session talks to, from what the user typed and what the deployer configured."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from core.errors import ConfigError
from core.i18n import Language
from core.policy.netguard import allowed_base_urls_from, typed_base_url_allowed
from core.policy.owners import AccessMode
from core.providers.backends import DEFAULT_REPLY_TIME_LIMIT_S, ChatBackend
from core.providers.registry import provider_for

KeySource = Literal["typed", "secrets", "environment"]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class Connection:
    """Where requests go. The key is excluded from repr so it never lands in a log or traceback.

    `base_url_typed`: the visitor typed the base URL, so the client is built from this connection
    alone (no deployer setting from the environment reaches it). `public_addresses_only`: it was
    typed on a public deployment (`ACCESS_MODE=private`), so the client connects only to public
    addresses and never quotes the server's text (`quote_server_text`).
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    key_source: KeySource | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    #: Total seconds one reply may take (REPLY_TIME_LIMIT_S).
    reply_time_limit_s: float = DEFAULT_REPLY_TIME_LIMIT_S
    #: The deployer's OPENAI_ORG_ID / OPENAI_PROJECT_ID; only ever on the deployer's connection.
    organization: str | None = None
    project: str | None = None
    base_url_typed: bool = False
    public_addresses_only: bool = False

    @property
    def offline(self) -> bool:
        return self.api_key is None and self.base_url is None

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc if self.base_url else "api.openai.com"

    @property
    def uses_deployer_key(self) -> bool:
        """True when requests are paid with the deployer's key (where deployer limits apply)."""
        return self.key_source in ("secrets", "environment")

    @property
    def quote_server_text(self) -> bool:
        """Whether errors may quote what the server said (never for a URL typed on a public deployment)."""
        return not self.public_addresses_only

    def backend(self, *, offline_chunk_delay_s: float = 0.0, language: Language = "en") -> ChatBackend:
        """A new backend from the provider that serves this connection (`core.providers.registry`); the
        offline model answers in `language`."""
        return provider_for(self).backend(
            self, offline_chunk_delay_s=offline_chunk_delay_s, language=language
        )


class Backends:
    """One backend per connection, kept across turns: what a backend learns about its server
    (e.g. that it rejects `stream_options`) and its HTTP connection pool last.

    Holds the few most recently used connections (one per session; a visitor rarely switches).
    """

    def __init__(self, *, offline_chunk_delay_s: float = 0.0, keep: int = 4) -> None:
        self.offline_chunk_delay_s = offline_chunk_delay_s
        self._keep = keep
        self._backends: OrderedDict[tuple[Connection, Language | None], ChatBackend] = OrderedDict()

    def __len__(self) -> int:
        return len(self._backends)

    def for_connection(self, connection: Connection, language: Language = "en") -> ChatBackend:
        """The backend kept for `connection`; offline, one per language (the page's)."""
        key = (connection, language if connection.offline else None)
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = connection.backend(
                offline_chunk_delay_s=self.offline_chunk_delay_s, language=language
            )
            while len(self._backends) > self._keep:
                self._backends.popitem(last=False)
        self._backends.move_to_end(key)
        return backend


def _first(*candidates: tuple[object, KeySource]) -> tuple[str | None, KeySource | None]:
    for value, source in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip(), source
    return None, None


def resolve_connection(
    *,
    typed_key: str = "",
    typed_base_url: str = "",
    secrets: Mapping[str, object],
    environ: Mapping[str, str],
    access_mode: AccessMode = "single-user",
    allowed_base_urls: Sequence[str] | None = None,
) -> Connection:
    """The key and base URL for one session.

    The deployer configures OPENAI_API_KEY / OPENAI_BASE_URL in Streamlit secrets or the
    environment (secrets win); a visitor may type their own in the sidebar, which win over both.
    A base URL the visitor typed is only ever paired with a key the visitor typed: the deployer's
    key goes to the deployer's endpoint and nowhere else, and so do the deployer's OPENAI_ORG_ID
    and OPENAI_PROJECT_ID (secrets or environment). The deployer may also set OPENAI_TIMEOUT_S,
    OPENAI_MAX_RETRIES and REPLY_TIME_LIMIT_S in the environment.

    With `access_mode="private"` a typed base URL must match `allowed_base_urls` (None: the
    deployer's ALLOWED_BASE_URLS from secrets or the environment), else `BaseUrlRefused` is
    raised; an allowed one is reached only at public addresses (`core.policy.netguard`).
    """
    typed_url = typed_base_url.strip()
    organization = project = None
    if typed_url:
        if allowed_base_urls is None:
            allowed_base_urls = allowed_base_urls_from(secrets, environ) if access_mode == "private" else ()
        typed_base_url_allowed(typed_url, access_mode=access_mode, allowed=allowed_base_urls)
        api_key, source = _first((typed_key, "typed"))
        base_url: str | None = typed_url
    else:
        api_key, source = _first(
            (typed_key, "typed"),
            (secrets.get("OPENAI_API_KEY"), "secrets"),
            (environ.get("OPENAI_API_KEY"), "environment"),
        )
        base_url, _ = _first(
            (secrets.get("OPENAI_BASE_URL"), "secrets"), (environ.get("OPENAI_BASE_URL"), "environment")
        )
        organization, _ = _first(
            (secrets.get("OPENAI_ORG_ID"), "secrets"), (environ.get("OPENAI_ORG_ID"), "environment")
        )
        project, _ = _first(
            (secrets.get("OPENAI_PROJECT_ID"), "secrets"), (environ.get("OPENAI_PROJECT_ID"), "environment")
        )
    return Connection(
        api_key=api_key,
        base_url=base_url,
        key_source=source,
        timeout_s=_number(environ, "OPENAI_TIMEOUT_S", float, DEFAULT_TIMEOUT_S),
        max_retries=int(_number(environ, "OPENAI_MAX_RETRIES", int, DEFAULT_MAX_RETRIES)),
        reply_time_limit_s=_number(
            environ, "REPLY_TIME_LIMIT_S", float, DEFAULT_REPLY_TIME_LIMIT_S, positive=True
        ),
        organization=organization,
        project=project,
        base_url_typed=bool(typed_url),
        public_addresses_only=bool(typed_url) and access_mode == "private",
    )


def _number(
    environ: Mapping[str, str],
    name: str,
    parse: Callable[[str], float],
    default: float,
    *,
    positive: bool = False,
) -> float:
    """A deployer's numeric setting; a bad value is a clear error rather than a traceback."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        whole = " (a whole number)" if parse is int else ""
        least = "more than 0" if positive else "at least 0"
        raise ConfigError(name, f"The setting {name} must be a number of {least}{whole}, not {raw!r}.").coded(
            ("config_whole_positive" if positive else "config_whole")
            if parse is int
            else ("config_number_positive" if positive else "config_number"),
            setting=name,
            value=raw,
        )
    return value
