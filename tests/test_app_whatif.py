"""The what-if view: the open conversation replayed under another budget, nothing sent."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.apptest import conversation, send


def test_a_smaller_budget_says_what_it_would_cost_and_forget(app: AppTest) -> None:
    for i in range(8):
        send(app, f"question {i}: which noodles should I try first in Lanzhou, and why? " * 2)
    turns_before = len(conversation(app).turns)
    app.switch_page("app_pages/whatif.py").run()
    assert not app.exception, app.exception
    app.number_input(key="whatif_budget").set_value(256).run()
    metrics = {m.label: m for m in app.metric}
    assert metrics["Forgotten, what if"].value != "0"
    assert metrics["Cost, what if"].delta.startswith("recorded $")
    table = next(d.value for d in app.dataframe if "prompt, what if" in d.value.columns)
    assert len(table) == turns_before
    assert (table["prompt, what if"] <= table["prompt, recorded"]).all()
    assert (table["prompt, what if"].iloc[-1]) <= 256
    assert any(table["would drop"].astype(bool))
    assert len(conversation(app).turns) == turns_before  # nothing was sent
    assert len(app.get("vega_lite_chart")) == 1
    # The replay is served from a simulated prompt cache (OpenAI's rule unless chosen otherwise),
    # and every policy is compared on it.
    assert "From cache, what if" in metrics and "from cache, what if" in table.columns
    policies = next(d.value for d in app.dataframe if "hit rate" in d.value.columns)
    assert list(policies["policy"]) == [
        "Drop the oldest exchanges",
        "Summarize the oldest exchanges",
        "Keep a stable prefix (cache-friendly)",
    ]
    # What each would cost beside what was recorded. The record was served from the offline
    # model's prefix cache; the replay's prompts of under 1,024 tokens are not (OpenAI's rule),
    # so only the policies that send fewer tokens cost less, not the summarizer's extra calls.
    recorded = float(metrics["Cost, what if"].delta.removeprefix("recorded $"))
    assert (table["from cache, recorded"].iloc[1:] > 0).all() and recorded > 0
    differences = policies.set_index("policy")["cost difference ($)"]
    assert differences["Drop the oldest exchanges"] < 0
    assert differences["Keep a stable prefix (cache-friendly)"] < 0
    app.selectbox(key="whatif_cache_rule").set_value("prefix").run()
    assert not app.exception, app.exception
    by_prefix = next(d.value for d in app.dataframe if "hit rate" in d.value.columns)
    assert (by_prefix["from cache"] >= policies["from cache"]).all()
    assert (by_prefix["from cache"] > 0).any()


def record_thread_name() -> None:
    import threading

    import streamlit as st

    st.write(threading.current_thread().name)


def test_a_replay_rests_only_while_another_session_runs_its_script() -> None:
    """`another_script_runs` knows Streamlit's script threads by name: the name a script run
    really has, and a second run's thread makes it true."""
    import threading

    from ui.frame import SCRIPT_THREAD_NAME, another_script_runs

    app = AppTest.from_function(record_thread_name).run()
    assert [element.value for element in app.markdown] == [SCRIPT_THREAD_NAME]
    assert not another_script_runs()
    running, done = threading.Event(), threading.Event()

    def other_run() -> None:
        running.set()
        done.wait(10)

    thread = threading.Thread(target=other_run, name=SCRIPT_THREAD_NAME)
    thread.start()
    running.wait(10)
    try:
        assert another_script_runs()
    finally:
        done.set()
        thread.join()
    assert not another_script_runs()
