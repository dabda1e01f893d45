"""The provider registry: each backend declares what it supports, the first provider that
handles a connection serves it, and nothing else in core asks a backend's type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.compare.comparison import Column, Comparison
from core.counting.methods import counting_for
from core.counting.server_tokens import TokenizeClient
from core.errors import ConversationStateError
from core.i18n import Language
from core.personas.persona import load_personas
from core.providers import registry as providers
from core.providers.backends import Capabilities, ChatBackend, ChatRequest, OpenAIBackend
from core.providers.connection import Backends, Connection
from core.providers.offline import OfflineBackend, OfflineReplyStream
from tests.openai_server import OpenAIServer

REPO_ROOT = Path(__file__).resolve().parent.parent


class EchoBackend:
    """A provider's backend for the tests: the offline model's replies, declared single-threaded
    and counted locally, as a new provider's module would declare its own."""

    capabilities = Capabilities(server_usage=False, counting="local", cached_tokens=False, thread_safe=False)

    def stream(self, request: ChatRequest) -> OfflineReplyStream:
        return OfflineReplyStream(request, 0.0)

    def tokenize_client(self) -> TokenizeClient | None:
        return None


class EchoProvider:
    name = "echo-test"

    def handles(self, connection: Connection) -> bool:
        return connection.host == "echo.invalid"

    def backend(
        self, connection: Connection, *, offline_chunk_delay_s: float = 0.0, language: Language = "en"
    ) -> ChatBackend:
        return EchoBackend()


@pytest.fixture
def echo_provider() -> Iterator[EchoProvider]:
    provider = EchoProvider()
    providers.register(provider)
    yield provider
    providers._registered.pop(provider.name)


def test_the_shipped_providers_serve_their_connections() -> None:
    assert [p.name for p in providers.providers()][-3:] == ["offline", "anthropic", "openai"]
    assert providers.provider_for(Connection()).name == "offline"
    assert providers.provider_for(Connection(api_key="sk-ant-test")).name == "anthropic"
    assert providers.provider_for(Connection(api_key="sk-test")).name == "openai"
    assert providers.provider_for(Connection(base_url="http://127.0.0.1:11434/v1")).name == "openai"
    assert isinstance(Connection().backend(), OfflineBackend)


def test_each_backend_declares_what_it_supports(openai_server: OpenAIServer) -> None:
    offline = Connection().backend()
    remote = Connection(api_key="sk-test", base_url=openai_server.base_url).backend()
    assert isinstance(remote, OpenAIBackend)
    assert offline.capabilities == Capabilities(
        server_usage=False, counting="local", cached_tokens=True, thread_safe=True
    )
    assert remote.capabilities.server_usage and remote.capabilities.counting == "server"
    assert offline.tokenize_client() is None
    client = remote.tokenize_client()
    assert client is not None and client.root == openai_server.base_url.removesuffix("/v1")


def test_a_new_provider_is_one_registration(echo_provider: EchoProvider) -> None:
    connection = Connection(api_key="sk-test", base_url="https://echo.invalid/v1")
    assert providers.provider_for(connection) is echo_provider  # asked before the fallback
    backend = Backends().for_connection(connection)
    assert isinstance(backend, EchoBackend)
    # Counting, compare and the session ask its capabilities, not its type.
    assert counting_for(backend).counts("llama3.2") is False
    persona = next(iter(load_personas(REPO_ROOT / "personas").personas.values()))
    with pytest.raises(ConversationStateError, match="not thread-safe"):
        Comparison([Column.start(persona, backend), Column.start(persona, backend)])
    comparison = Comparison([Column.start(persona, EchoBackend()), Column.start(persona, EchoBackend())])
    comparison.send("hello")
    assert comparison.wait(timeout=10)
    turns = [column.session.last_turn for column in comparison.columns]
    assert all(turn is not None and turn.usage_source == "local" for turn in turns)


def test_no_module_outside_the_providers_names_a_backend_class() -> None:
    """The rest of core and the page ask capabilities (the reason for the registry)."""
    # The providers' own package, and the OpenAI-compatible servers' tokenize client.
    providers = REPO_ROOT / "core" / "providers"
    for folder in ("core", "ui", "app_pages"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.is_relative_to(providers) or path.name == "server_tokens.py":
                continue
            text = path.read_text(encoding="utf-8")
            for name in ("OpenAIBackend", "OfflineBackend", "backend._client"):
                assert name not in text, f"{path.name} names {name}"
