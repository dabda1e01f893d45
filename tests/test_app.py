"""The page, driven through Streamlit's AppTest on the offline model."""

import json
import shutil

from core.chat.context import DropOldest
from core.counting.model_info import load_model_table
from core.stats import context_gauge, totals
from tests.apptest import (
    click,
    conversation,
    images_in,
    metric,
    new_conversation,
    open_expander,
    open_key,
    open_settings,
    page_text,
    select_persona,
    send,
    session,
    setting,
    show_page,
)
from tests.conftest import REPO_ROOT
from tests.openai_server import Billing
from ui import frame as frame_module
from ui.chat_page import DRAFT_STORAGE
from ui.text import money

PERSONAS = REPO_ROOT / "personas"


def test_foodie_is_first_and_personas_are_selectable(app):
    selector = app.selectbox(key="persona_id")
    assert selector.options[0] == "🍜 美食家"
    assert selector.value == "foodie"
    assert len(selector.options) >= 6
    assert app.title[0].value == "🍜 美食家"
    # Greeting and starter prompts on an empty conversation.
    assert app.chat_message[0].name == "assistant"
    assert any(b.key and b.key.startswith("starter::foodie::") for b in app.button)
    select_persona(app, "translator")
    assert "🍜" not in app.title[0].value


def test_a_full_turn_on_the_offline_model(app):
    send(app, "北京烤鸭怎么吃？")
    chat = conversation(app)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant"]
    turn = chat.turns[0]
    assert turn.usage_source == "local"
    assert turn.reported_prompt_tokens == turn.counted_prompt_tokens
    assert "[Offline model]" in chat.messages[-1].content
    texts = [m.value for m in app.markdown]
    assert "北京烤鸭怎么吃？" in texts
    assert any("[Offline model]" in text for text in texts)
    assert any("Offline model: its usage is computed locally" in c.value for c in app.caption)
    # The headline: what the next call sends (all of this, and a question of the usual size).
    sends = context_gauge(chat).used + chat.messages[1].tokens
    headline = app.metric[0]
    assert (headline.label, headline.value) == ("Next call sends", f"{sends:,}")
    assert headline.delta == f"{sends / 1024:.0%} of the 1,024 budget"
    # A grid of two columns, filled row by row and read column by column.
    assert [m.label for m in app.metric] == ["Next call sends", "Tokens", "Cost", "Cache hit rate"]
    tokens_in, tokens_out = chat.turns[0].reported_prompt_tokens, chat.turns[0].reported_completion_tokens
    assert tokens_in is not None and tokens_out is not None
    tokens = metric(app, "Tokens")
    assert tokens.value == f"{tokens_in + tokens_out:,}"
    assert tokens.delta == f"{tokens_in:,} in · {tokens_out:,} out"
    assert not app.error


def test_the_offline_model_fills_the_cache_figures(app):
    send(app, "北京烤鸭怎么吃？")
    assert metric(app, "Cache hit rate").value == "0%"  # a first prompt is never cached
    send(app, "还有呢？")
    turns = conversation(app).turns
    cached = turns[1].cached_tokens
    assert cached > 0
    hit_rate = metric(app, "Cache hit rate")
    rate = cached / (turns[0].prompt_tokens + turns[1].prompt_tokens)
    assert hit_rate.value == f"{rate:.0%}"
    # Offline, the money is what caching would save (as the cost says what it would cost); a
    # sum under a hundredth of a cent says so rather than $0.0000.
    worth = totals(conversation(app), load_model_table()).cache_saved
    assert worth is not None and worth > 0
    would_save = "< $0.0001" if worth < 0.0001 else f"${worth:.4f}"
    assert hit_rate.delta == f"offline; would save {would_save}"
    cost = metric(app, "Cost")
    assert cost.value == "$0" and cost.delta.startswith("offline; would be ")
    assert "$0.0000" not in cost.delta  # a sum under a hundredth of a cent says so


def test_starter_prompt_sends_its_text(app):
    starter = next(b for b in app.button if b.key and b.key.startswith("starter::foodie::"))
    starter.click().run()
    assert conversation(app).messages[1].content == starter.label


def test_trimming_shows_in_record_chat_and_chart_data(app):
    # Before any trim, a line among the context's notes says so; the log has no header yet.
    assert "Nothing trimmed yet." in page_text(app) and "**Trimming log**" not in page_text(app)
    for i in range(14):
        send(app, f"第{i}个问题：四川火锅、重庆小面和成都担担面，哪一个最适合第一次去四川的人？")
    chat = conversation(app)
    assert chat.trim_events, "14 turns cannot fit the foodie's 1,024-token budget"
    assert all(t.counted_prompt_tokens <= 1024 for t in chat.turns)
    trimmed = [m for m in chat.messages if m.state == "trimmed"]
    assert len(trimmed) == sum(len(e.dropped) for e in chat.trim_events)
    # The chat marks them, the log lists them, the chart is drawn.
    assert any(c.value == trimmed[0].content for c in app.caption)
    log = next(t.value for t in app.table if "what was dropped" in t.value.columns)
    assert "**Trimming log**" in page_text(app) and "Nothing trimmed yet." not in page_text(app)
    assert list(log["turn"]) == [e.turn for e in chat.trim_events]
    # The log and the next-call view show whole texts (a table that wraps them), system prompt too.
    assert log["what was dropped"].iloc[0].startswith(f"user: {trimmed[0].content}\n\nassistant: ")
    # The next call's table is drawn only while its expander is open.
    assert not any("next call" in t.value.columns for t in app.table)
    open_expander(app, "next_call_open")
    sends = next(t.value for t in app.table if "next call" in t.value.columns)
    assert sends["text"].iloc[0] == chat.system_prompt and sends["role"].iloc[0] == "system"
    assert set(sends["next call"]) <= {"sent", "dropped"} and sends["next call"].iloc[-1] == "sent"
    assert len(app.get("vega_lite_chart")) == 2  # the context gauge and the per-turn chart


def test_switching_personas_keeps_separate_conversations(app):
    send(app, "foodie question")
    select_persona(app, "translator")
    send(app, "translate this please")
    select_persona(app, "foodie")
    foodie, translator = conversation(app, "foodie"), conversation(app, "translator")
    assert [m.content for m in foodie.messages if m.role == "user"] == ["foodie question"]
    assert [m.content for m in translator.messages if m.role == "user"] == ["translate this please"]
    assert "translate this please" not in [m.value for m in app.markdown]
    assert "foodie question" in [m.value for m in app.markdown]


def test_new_conversation_starts_over_and_keeps_budget(app):
    send(app, "hello")
    setting(app, "budget").set_value(2048).run()
    new_conversation(app)
    chat = conversation(app)
    assert len(chat.messages) == 1 and chat.context_budget == 2048


def test_budget_and_reply_cap_are_separate_and_applied(app):
    setting(app, "budget").set_value(512).run()
    setting(app, "reply_cap").set_value(12).run()
    send(app, "hello")
    chat = conversation(app)
    assert chat.context_budget == 512
    assert chat.turns[0].reported_completion_tokens == 12  # the offline model honours the cap


def test_export_import_round_trip(app):
    for text in ("one", "two", "three"):
        send(app, text)
    exported = conversation(app).to_json()
    assert "api_key" not in exported
    select_persona(app, "translator")
    open_expander(app, "settings_open").file_uploader(key="import_file").set_value(
        ("foodie.json", exported.encode(), "application/json")
    ).run()
    assert not app.exception
    # The file names the foodie, so it lands there and the selector follows.
    assert app.selectbox(key="persona_id").value == "foodie"
    assert conversation(app).to_dict() == json.loads(exported)
    assert any("Imported 7 messages" in s.value for s in app.success)


def test_bad_import_is_rejected_and_changes_nothing(app):
    send(app, "keep me")
    before = conversation(app).to_dict()
    open_expander(app, "settings_open").file_uploader(key="import_file").set_value(
        ("bad.json", b'{"messages": 3}', "application/json")
    ).run()
    assert any("Import of bad.json failed" in e.value for e in app.error)
    assert conversation(app).to_dict() == before


def test_too_long_message_is_an_error_and_is_kept(app):
    long_text = "火锅" * 2000
    send(app, long_text)
    chat = conversation(app)
    assert chat.pending_user_message.content == long_text
    assert chat.turns == []
    assert any("more than the context budget of 1,024" in e.value for e in app.error)
    assert not any("[Offline model]" in m.value for m in app.markdown)
    assert "Retry" in [b.label for b in app.button]
    # Raise the budget and retry: the same message goes through.
    setting(app, "budget").set_value(20_000).run()
    app.button(key="retry").click().run()
    assert chat.turns and chat.messages[-2].content == long_text
    assert not app.error


def test_regenerate_replaces_the_last_answer(app):
    send(app, "hello")
    app.button(key="regenerate").click().run()
    chat = conversation(app)
    assert [m.state for m in chat.messages] == ["context", "context", "replaced", "context"]
    assert len(chat.turns) == 2


def test_user_text_is_never_rendered_as_html(app):
    send(app, "<script>alert(1)</script><b>bold</b>")
    # The page's one HTML element, the script that keeps the chat input's draft, is drawn only
    # when the view is entered; this run has none.
    assert not app.get("html")
    assert all(not getattr(m.proto, "allow_html", False) for m in app.markdown)


def test_the_draft_keeper_is_drawn_when_the_chat_view_is_entered(app):
    """The script that keeps the chat input's unsent text is drawn on the chat view's first run
    (of the session, or after another view), not on every rerun: it keeps watching the input."""
    assert [DRAFT_STORAGE in h.proto.body for h in app.get("html")] == [True]
    app.run()
    assert not app.get("html")
    show_page(app, "personas")
    show_page(app, "chat")
    assert [DRAFT_STORAGE in h.proto.body for h in app.get("html")] == [True]
    send(app, "火锅")
    assert not app.get("html")


def test_dollar_signs_are_prices_not_latex(app):
    send(app, "Is it $5 or $10?")
    assert "Is it \\$5 or \\$10?" in [m.value for m in app.markdown]


def test_unknown_model_is_counted_as_an_estimate_with_unknown_price(app):
    setting(app, "model").input("llama3.2").run()
    send(app, "hello")
    chat = conversation(app)
    assert chat.model == "llama3.2" and chat.turns[0].count_exact is False
    assert any("tiktoken does not know `llama3.2`" in w.value for w in app.warning)
    # Never cut to "unknown …": a dash, with the words under it.
    cost = metric(app, "Cost")
    assert (cost.value, cost.delta) == ("—", "unknown price")
    assert metric(app, "Cache hit rate").delta == "unknown price"


def test_a_budget_fitted_lower_than_set_shows_both_numbers(start_app, openai_server):
    """A server's context window of 2,048 and an estimate's safety margin lower the budget calls
    are fitted to: the setting, the headline and the gauge all say both numbers."""
    openai_server.models.append("qwen3")
    openai_server.billing = Billing(tokenize=None, max_model_len=2048)
    app = start_app(OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-test", OPENAI_MAX_RETRIES="0")
    setting(app, "model").input("qwen3").run()
    setting(app, "budget").set_value(4096).run()
    for question in ("北京烤鸭怎么吃？", "还有呢？"):
        openai_server.reply("先片皮，再蘸酱，卷进荷叶饼里。")
        send(app, question)
    fitted = conversation(app).context_budget
    assert fitted < 2048
    assert f"Calls are fitted to {fitted:,} of the 4,096 set" in page_text(app)
    assert app.metric[0].delta.endswith(f"of {fitted:,} (budget set: 4,096)")
    gauge = json.loads(app.get("vega_lite_chart")[1].proto.spec)
    title = gauge["layer"][0]["encoding"]["x"]["title"]
    assert title == f"tokens of the {fitted:,}-token budget (set: 4,096)"


def test_a_priced_model_says_what_a_turn_costs_on_average(start_app, openai_server):
    """On a real server, the cost has its line under the figure too (its row's other metric has
    one, so the grid's rows line up): nothing sent yet, then the average turn's price."""
    app = start_app(OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-test", OPENAI_MAX_RETRIES="0")
    assert (metric(app, "Cost").value, metric(app, "Cost").delta) == ("$0", "nothing sent yet")
    for question in ("北京烤鸭怎么吃？", "还有呢？"):
        openai_server.reply("先片皮，再蘸酱，卷进荷叶饼里。")
        send(app, question)
    spent = totals(conversation(app), load_model_table()).cost
    assert spent is not None and spent > 0
    cost = metric(app, "Cost")
    assert cost.value == ("< $0.0001" if spent < 0.0001 else f"${spent:.4f}")
    per_turn = spent / 2
    assert cost.delta == ("< $0.0001" if per_turn < 0.0001 else f"${per_turn:.4f}") + " a turn on average"
    # What caching saved, beside it (the server reports cached tokens).
    saved = totals(conversation(app), load_model_table()).cache_saved
    assert saved is not None
    assert metric(app, "Cache hit rate").delta == f"saved {money(saved)}"


def test_the_headline_stays_within_the_budget_when_the_next_call_trims(app):
    """A conversation past its budget is healthy when the next call trims to fit: the headline
    says what that call sends (within the budget), never "112% of 300"."""
    setting(app, "budget").set_value(320).run()
    for question in ("北京烤鸭怎么吃？" * 4, "还有什么好吃的？" * 4, "火锅呢？" * 6):
        send(app, question)
    chat = conversation(app)
    assert context_gauge(chat).used > chat.context_budget  # what the old headline showed, over 100%
    headline = app.metric[0]
    sends = int(headline.value.replace(",", ""))
    assert sends <= chat.context_budget
    assert headline.delta == f"{sends / chat.context_budget:.0%} of the {chat.context_budget:,} budget"
    assert any("The next turn would drop the oldest" in c.value for c in app.caption)


def test_malformed_deployer_setting_is_a_clear_error(start_app):
    at = start_app(OPENAI_TIMEOUT_S="soon")
    assert not at.exception
    assert any("setting OPENAI_TIMEOUT_S must be a number" in e.value for e in at.error)


def test_missing_secrets_runs_offline(app):
    assert not app.exception
    assert any("built-in offline model" in i.value for i in app.info)


def test_typed_key_switches_to_the_openai_backend(app):
    open_settings(app).text_input(key="api_key").input("sk-typed-in-this-session").run()
    assert any("api.openai.com" in s.value and "typed here" in s.value for s in app.success)
    assert not any("built-in offline model" in i.value for i in app.info)
    assert all("sk-typed-in-this-session" not in s.value for s in app.success)


def test_the_settings_are_drawn_only_while_open_and_keep_the_typed_key(app):
    assert not [w for w in app.sidebar.text_input if w.key == "api_key"]  # closed on load
    open_settings(app).text_input(key="api_key").input("sk-typed-in-this-session").run()
    app.session_state["settings_open"] = False
    app.run()
    assert not [w for w in app.sidebar.text_input if w.key == "api_key"]
    for _ in range(2):  # reruns with the field not drawn: still connected with the typed key
        app.run()
        assert any("typed here" in s.value for s in app.success)
    assert open_settings(app).text_input(key="api_key").value == "sk-typed-in-this-session"


def test_broken_persona_file_is_reported_and_the_rest_load(start_app, tmp_path):
    shutil.copy(PERSONAS / "foodie.yaml", tmp_path / "foodie.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    at = start_app(PERSONAS_DIR=str(tmp_path))
    assert not at.exception
    assert at.selectbox(key="persona_id").options == ["🍜 美食家"]
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "broken.yaml" in errors[0]
    send(at, "still works")
    assert conversation(at).turns


def test_a_persona_file_added_while_the_app_runs_is_offered_after_the_recheck(
    start_app, tmp_path, monkeypatch
):
    """The personas folder is looked at again at most every PERSONAS_RECHECK_S: a rerun within it
    reads no folder; the next one after it offers the new file (and drops a removed one)."""
    monkeypatch.setattr(frame_module, "PERSONAS_RECHECK_S", 3600.0)
    shutil.copy(PERSONAS / "foodie.yaml", tmp_path / "foodie.yaml")
    at = start_app(PERSONAS_DIR=str(tmp_path))
    assert at.selectbox(key="persona_id").options == ["🍜 美食家"]
    shutil.copy(PERSONAS / "foodie.yaml", tmp_path / "second.yaml")
    at.run()
    assert at.selectbox(key="persona_id").options == ["🍜 美食家"]  # within the recheck
    monkeypatch.setattr(frame_module, "PERSONAS_RECHECK_S", 0.0)
    at.run()
    assert at.selectbox(key="persona_id").options == ["🍜 美食家", "🍜 美食家"]
    (tmp_path / "second.yaml").unlink()
    at.run()
    assert at.selectbox(key="persona_id").options == ["🍜 美食家"]


def test_no_loadable_persona_stops_with_a_clear_error(start_app, tmp_path):
    at = start_app(PERSONAS_DIR=str(tmp_path / "missing"))
    assert not at.exception
    assert "No persona could be loaded" in at.error[0].value


def test_a_long_history_draws_the_newest_messages_and_the_rest_on_request(app):
    chat = conversation(app)
    for i in range(150):
        chat.add_user(f"question {i}")
        DropOldest().fit(chat)
        chat.add_assistant(f"answer {i}")
    app.run()
    shown = [m.value for m in app.markdown] + [c.value for c in app.caption]
    assert "answer 149" in shown and "question 50" in shown
    assert "answer 49" not in shown and "question 0" not in shown
    toggle = app.toggle(key=f"show_all::{open_key(app)}")
    assert toggle.label == "Show 100 earlier messages"
    toggle.set_value(True).run()
    shown = [m.value for m in app.markdown] + [c.value for c in app.caption]
    assert "question 0" in shown and "answer 149" in shown


def test_a_reply_cut_by_the_reply_cap_is_marked_and_continued(app):
    setting(app, "reply_cap").set_value(8).run()
    send(app, "tell me everything about dumplings")
    assert ":orange-badge[cut by the reply cap]" in [m.value for m in app.markdown]
    click(app, "Continue the reply")
    chat = conversation(app)
    asked = chat.messages[-2]
    assert asked.automatic and asked.role == "user"
    assert any(c.value.startswith("↪ Asked the model to continue") for c in app.caption)
    # The call sent the cut reply and the request to continue after it.
    assert chat.turns[-1].messages_sent == 4
    assert chat.messages[-1].content.startswith("[Offline model] I received 4")
    assert len(chat.turns) == 2 and session(app).last_turn is chat.turns[-1]


def test_the_backend_is_kept_across_turns(app):
    send(app, "one")
    backend = session(app).backend
    send(app, "two")
    assert session(app).backend is backend
    open_settings(app).text_input(key="api_key").input("sk-typed-in-this-session").run()
    assert session(app).backend is not backend


def test_remote_images_are_links_never_loaded(app):
    send(app, "look ![pixel](http://tracker.example/p.gif?u=1) and ![][ref]\n\n[ref]: http://t.example/x.png")
    shown = "\n".join(m.value for m in app.markdown)
    assert images_in(shown) == []
    assert "🖼[pixel](http://tracker.example/p.gif?u=1)" in shown
    exported = conversation(app).to_markdown()
    assert images_in(exported) == [] and "🖼[pixel](http://tracker.example/p.gif?u=1)" in exported


def test_the_markdown_export_escapes_raw_html(app):
    send(app, "<img src=x onerror=alert(1)> <b>bold</b>")
    exported = conversation(app).to_markdown()
    assert "<img" not in exported and "&lt;img src=x onerror=alert(1)&gt;" in exported
