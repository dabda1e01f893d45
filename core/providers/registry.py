"""Providers: which backend serves a connection, in the style of llm's `register_models`.

A provider is one module that defines its backend (a `core.providers.backends.ChatBackend` declaring its
`Capabilities`: server-reported usage, how its tokens are counted, cached-token reports, thread
safety, and the HTTP client that counts on its server) and registers a `Provider` when imported:

    class AnthropicMessages:                      # core/anthropic.py
        name = "anthropic"
        def handles(self, connection): return connection.host == "api.anthropic.com"
        def backend(self, connection, **options): return AnthropicBackend(...)

    register(AnthropicMessages())

and is named in `PROVIDER_MODULES`. The first provider whose `handles(connection)` is true serves
it; the OpenAI-compatible one comes last and takes any connection with a key or a base URL, the
offline model comes first and takes the rest. Nothing else in the app names a provider.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.i18n import Language
    from core.providers.backends import ChatBackend
    from core.providers.connection import Connection

#: The modules that register the providers, in the order they are asked.
PROVIDER_MODULES: tuple[str, ...] = (
    "core.providers.offline",
    "core.providers.anthropic_backend",
    "core.providers.backends",
)


class Provider(Protocol):
    name: str

    def handles(self, connection: Connection) -> bool:
        """True when this provider serves `connection`."""
        ...

    def backend(
        self, connection: Connection, *, offline_chunk_delay_s: float = 0.0, language: Language = "en"
    ) -> ChatBackend:
        """A new backend for `connection` (kept per connection by `core.providers.connection.Backends`);
        `language` is the page's, for a backend that writes text itself (the offline model)."""
        ...


_registered: dict[str, Provider] = {}
_lock = threading.Lock()


def register(provider: Provider) -> None:
    """Add `provider` (a module calls this when imported); registering a name again replaces it."""
    with _lock:
        _registered[provider.name] = provider


def providers() -> list[Provider]:
    """Every provider, in the order of `PROVIDER_MODULES` (their modules imported once)."""
    for module in PROVIDER_MODULES:
        importlib.import_module(module)
    with _lock:
        found = list(_registered.values())
    return sorted(found, key=_rank)


def provider_for(connection: Connection) -> Provider:
    """The provider that serves `connection`."""
    for provider in providers():
        if provider.handles(connection):
            return provider
    raise LookupError(f"No provider serves {connection!r}.")  # the OpenAI-compatible one takes any


def _rank(provider: Provider) -> int:
    """Its module's place in `PROVIDER_MODULES`; one registered from elsewhere is asked first."""
    module = type(provider).__module__
    return PROVIDER_MODULES.index(module) if module in PROVIDER_MODULES else -1
