"""Where the key and base URL come from, and which backend that picks."""

import pytest

from core.errors import BaseUrlRefused, DashboardError
from core.providers.connection import Backends, resolve_connection
from core.providers.offline import OfflineBackend


def test_nothing_configured_means_offline():
    connection = resolve_connection(secrets={}, environ={})
    assert connection.offline
    assert isinstance(connection.backend(), OfflineBackend)


def test_precedence_typed_then_secrets_then_environment():
    env = {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://env:1/v1"}
    secrets = {"OPENAI_API_KEY": "sk-secret"}
    assert resolve_connection(typed_key="sk-typed", secrets=secrets, environ=env).key_source == "typed"
    assert resolve_connection(typed_key=" ", secrets=secrets, environ=env).api_key == "sk-secret"
    from_env = resolve_connection(secrets={}, environ=env)
    assert (from_env.api_key, from_env.key_source, from_env.host) == ("sk-env", "environment", "env:1")


def test_a_base_url_alone_reaches_a_local_server_without_a_key():
    connection = resolve_connection(typed_base_url="http://127.0.0.1:11434/v1", secrets={}, environ={})
    assert not connection.offline
    assert connection.host == "127.0.0.1:11434"
    assert not isinstance(connection.backend(), OfflineBackend)


def test_the_key_never_shows_in_repr():
    connection = resolve_connection(typed_key="sk-very-secret", secrets={}, environ={})
    assert "sk-very-secret" not in repr(connection)
    assert "sk-very-secret" not in repr(connection.backend())


def test_deployer_key_never_goes_to_a_base_url_the_visitor_typed():
    deployer = {"OPENAI_API_KEY": "sk-deployer"}
    for secrets, environ in ((deployer, {}), ({}, deployer)):
        connection = resolve_connection(
            typed_base_url="http://attacker.example/v1", secrets=secrets, environ=environ
        )
        assert connection.api_key is None
        assert connection.key_source is None
        assert connection.base_url == "http://attacker.example/v1"
    # The visitor's own key goes with the visitor's own URL.
    own = resolve_connection(typed_key="sk-mine", typed_base_url="http://x/v1", secrets=deployer, environ={})
    assert (own.api_key, own.key_source) == ("sk-mine", "typed")


def test_deployer_base_url_goes_with_the_deployer_key():
    connection = resolve_connection(
        secrets={"OPENAI_BASE_URL": "https://azure.example/openai/v1/"},
        environ={"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://ignored/v1"},
    )
    assert (connection.base_url, connection.api_key) == ("https://azure.example/openai/v1/", "sk-env")


def test_deployer_timeouts_and_retries():
    connection = resolve_connection(
        secrets={}, environ={"OPENAI_TIMEOUT_S": "7.5", "OPENAI_MAX_RETRIES": "0"}
    )
    assert (connection.timeout_s, connection.max_retries) == (7.5, 0)
    assert resolve_connection(secrets={}, environ={}).max_retries == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("OPENAI_TIMEOUT_S", "soon"), ("OPENAI_MAX_RETRIES", "2.5"), ("OPENAI_MAX_RETRIES", "-1")],
)
def test_bad_deployer_settings_are_named(name, value):
    with pytest.raises(DashboardError, match=f"{name} must be a number"):
        resolve_connection(secrets={}, environ={name: value})


def test_the_deployers_organization_and_project_stay_with_the_deployers_connection():
    deployer = {"OPENAI_API_KEY": "sk-d", "OPENAI_ORG_ID": "org-d", "OPENAI_PROJECT_ID": "proj_d"}
    connection = resolve_connection(secrets={"OPENAI_ORG_ID": "org-secret"}, environ=deployer)
    assert (connection.organization, connection.project) == ("org-secret", "proj_d")
    assert connection.uses_deployer_key and not connection.base_url_typed
    typed = resolve_connection(typed_base_url="http://x/v1", secrets=deployer, environ=deployer)
    assert (typed.organization, typed.project) == (None, None)
    assert typed.base_url_typed and not typed.uses_deployer_key


def test_a_typed_url_gets_its_own_backend():
    backends = Backends()
    typed = resolve_connection(typed_key="sk-k", typed_base_url="http://x:1/v1", secrets={}, environ={})
    deployer = resolve_connection(
        secrets={}, environ={"OPENAI_API_KEY": "sk-k", "OPENAI_BASE_URL": "http://x:1/v1"}
    )
    assert (typed.api_key, typed.base_url) == (deployer.api_key, deployer.base_url)
    assert backends.for_connection(typed) is not backends.for_connection(deployer)
    assert backends.for_connection(typed).isolated and not backends.for_connection(deployer).isolated


def test_private_mode_checks_a_typed_url_against_the_allowlist():
    with pytest.raises(BaseUrlRefused):
        resolve_connection(
            typed_base_url="http://x/v1",
            secrets={},
            environ={"ALLOWED_BASE_URLS": "y"},
            access_mode="private",
        )
    allowed = resolve_connection(
        typed_base_url="http://y/v1", secrets={"ALLOWED_BASE_URLS": "y"}, environ={}, access_mode="private"
    )
    assert allowed.public_addresses_only and not allowed.quote_server_text
