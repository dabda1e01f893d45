"""Several replicas: two `streamlit run` servers on one PostgreSQL serve the same conversations.

A conversation started on one replica is listed, opened and continued on the other, and a reload
on the first shows what the second added: the database is the only shared state.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import OpenApp, StartStreamlit

pytestmark = pytest.mark.browser


def test_two_replicas_on_one_postgresql_share_the_conversations(
    postgres_url: str, start_streamlit: StartStreamlit, open_app: OpenApp
) -> None:
    env = {"DATABASE_URL": postgres_url}
    first, second = start_streamlit(env), start_streamlit(env)
    marker = f"replica-{secrets.token_hex(4)}"

    on_first = open_app(first)
    on_first.send(f"第一台：{marker}")
    conversation_id = parse_qs(urlsplit(on_first.page.url).query)["c"][0]

    # The second replica lists it (a new session starts on a new conversation) and opens it.
    on_second = open_app(second)
    on_second.open_conversation(f"第一台：{marker}")
    on_second.wait_until(
        f"() => document.body.innerText.includes('第一台：{marker}') && location.search.includes('c=')",
        "the second replica opens the conversation from its list",
    )
    on_second.wait_idle()
    assert parse_qs(urlsplit(on_second.page.url).query)["c"] == [conversation_id]
    on_second.send(f"第二台：{marker}")

    # A reload on the first replica reads what the second one added.
    on_first.page.reload()
    on_first.wait_loaded()
    text = on_first.body_text()
    assert f"第一台：{marker}" in text and f"第二台：{marker}" in text
    assert len(on_first.messages()) == 1 + 4  # the greeting, then two exchanges
    on_first.screenshot("replicas-after-reload")
