"""Test sets on the Compare page: a named list of prompts (typed, or from a text, CSV or YAML file)
run against 2-4 personas or models, with progress and cancel; each prompt's answers side by side
with their figures, what changed since the last run (after a persona was edited, say), and a
vote per prompt that feeds the leaderboard. Every run and vote goes through the service
(core/service.py), which holds them to the deployer's limits."""

from __future__ import annotations

import functools

import streamlit as st

from core.compare.comparison import PickOutcome
from core.compare.testsets import CellChange, TestRunRecord, TestSet, TestSetRun, compare_runs, parse_test_set
from core.errors import DashboardError
from core.notices import Notice, error_notice
from core.personas.persona import Persona
from core.service import ColumnChoice, VisitorService
from ui.state import Key, test_vote_key
from ui.text import as_markdown, error_text, tr, tr_plural

#: How often the progress bar redraws while a test set runs (seconds).
PROGRESS_S = 0.5
#: A vote's options after the columns' letters.
OTHER_VOTES: tuple[PickOutcome, ...] = ("tie", "both_bad")


def test_sets(service: VisitorService, personas: dict[str, Persona]) -> None:
    # Imported here: compare_view imports this module for its setup.
    from ui.compare_view import column_choices

    st.caption(tr("testsets.about"))
    saved = {test_set.name: test_set for test_set in service.test_sets()}
    if st.session_state.get(Key.TEST_SET_CHOICE) not in ("", *saved):
        st.session_state[Key.TEST_SET_CHOICE] = next(iter(saved), "")
    name = st.selectbox(
        tr("testsets.choose"),
        ["", *saved],
        format_func=lambda n: n or tr("testsets.new"),
        key=Key.TEST_SET_CHOICE,
    )
    if not name:
        test_set_editor(service)
        return
    test_set = saved[name]
    with st.expander(tr_plural("testsets.prompts", len(test_set.prompts)), icon="📝"):
        for number, prompt in enumerate(test_set.prompts, start=1):
            st.markdown(f"{number}. {as_markdown(prompt)}")
    count = int(
        st.number_input(
            tr("compare.columns.count"), min_value=2, max_value=4, value=2, key=Key.TEST_SET_COUNT
        )
    )
    choices = column_choices(service, personas, int(count), "tests_")
    run = service.test_run
    # Started from this run, not a callback: the personas are the ones this run loaded (a persona
    # edited since the button was drawn is run as it is now).
    if run is None and st.button(tr("testsets.run"), type="primary", icon="▶️"):
        start(service, personas, test_set, choices)
        run = service.test_run
    if run is not None:
        st.fragment(run_every=PROGRESS_S)(progress)(service, run)
    runs = service.test_runs(name)
    if runs:
        results(service, runs[0], runs[1] if len(runs) > 1 else None)


def test_set_editor(service: VisitorService) -> None:
    """A new test set: a name and its prompts, typed (one per line) or from a file."""
    st.text_input(tr("testsets.name"), key=Key.TEST_SET_NAME, max_chars=200)
    st.text_area(tr("testsets.text"), key=Key.TEST_SET_TEXT, height=140, placeholder=tr("testsets.text_help"))
    st.file_uploader(tr("testsets.file"), type=["txt", "csv", "yaml", "yml"], key=Key.TEST_SET_FILE)
    st.button(tr("testsets.save"), icon="💾", on_click=save, args=(service,))


def save(service: VisitorService) -> None:
    """The editor's callback: parse, save, and show the new set."""
    state = st.session_state
    name = str(state.get(Key.TEST_SET_NAME) or "").strip()
    upload = state.get(Key.TEST_SET_FILE)
    if not name:
        service.notify(Notice(code="test_set_needs_name", level="error"))
        return
    try:
        if upload is not None:
            test_set = parse_test_set(name, upload.getvalue(), upload.name)
        else:
            test_set = parse_test_set(name, str(state.get(Key.TEST_SET_TEXT) or "").encode())
    except DashboardError as error:
        service.notify(error_notice("test_set_unusable", error))
        return
    service.save_test_set(test_set)
    state[Key.TEST_SET_CHOICE] = test_set.name
    for key in (Key.TEST_SET_NAME, Key.TEST_SET_TEXT):
        state[key] = ""


def start(
    service: VisitorService, personas: dict[str, Persona], test_set: TestSet, choices: list[ColumnChoice]
) -> None:
    try:
        service.start_test_set(personas, test_set, choices)
    except DashboardError as error:
        st.error(tr("notice.test_set_not_started", error=error_text(error)))


def progress(service: VisitorService, run: TestSetRun) -> None:
    """Redrawn every PROGRESS_S while the set runs; once it ended, saves it and reruns the page."""
    if run.finished:
        service.finish_test_set()
        st.rerun()
    done, total = run.progress()
    st.progress(done / total, text=tr("testsets.progress", done=done, total=total))
    st.button(tr("testsets.cancel"), icon="⏹", on_click=service.cancel_test_set)


def results(service: VisitorService, record: TestRunRecord, previous: TestRunRecord | None) -> None:
    """The latest run: each prompt's answers side by side, what changed since `previous`, votes."""
    changes = {(c.prompt, c.column): c for c in compare_runs(previous, record)} if previous else {}
    st.markdown(f"**{tr('testsets.results', when=f'{record.started_at:%Y-%m-%d %H:%M}')}**")
    if record.cancelled:
        st.warning(tr("testsets.cancelled"), icon="⏹")
    if previous is not None:
        st.caption(difference_line(list(changes.values())))
    st.dataframe(column_totals(record, changes), hide_index=True, width="stretch")
    labels = [f"{letter} · {spec.label}" for letter, spec in zip("ABCD", record.columns, strict=False)]
    for prompt_index, prompt in enumerate(record.test_set.prompts):
        with st.container(border=True):
            st.markdown(f"**{prompt_index + 1}.** {as_markdown(prompt)}")
            for index, (column, label) in enumerate(zip(st.columns(len(labels)), labels, strict=True)):
                cell = record.cell(prompt_index, index)
                with column:
                    st.caption(as_markdown(label))
                    if cell is None or cell.skipped:
                        st.caption(tr("testsets.skipped"))
                        continue
                    if cell.error is not None:
                        st.error(as_markdown(error_text(cell.error)))
                    else:
                        st.markdown(as_markdown(cell.answer))
                    change = changes.get((record.test_set.prompts[prompt_index], record.columns[index].label))
                    if change is not None:
                        st.caption(tr("testsets.changed") if change.answer_changed else tr("testsets.same"))
            vote(service, record, prompt_index)


def vote(service: VisitorService, record: TestRunRecord, prompt: int) -> None:
    cells = [record.cell(prompt, n) for n in range(len(record.columns))]
    answered = [n for n, c in enumerate(cells) if c is not None and not c.skipped and c.error is None]
    if not answered:
        return
    options = [*("ABCD"[n] for n in answered), *OTHER_VOTES]
    current = next((v for v in record.votes if v.prompt == prompt), None)
    key = test_vote_key(record.id, prompt)
    if current is not None and key not in st.session_state:
        st.session_state[key] = "ABCD"[current.column] if current.column is not None else current.outcome
    st.segmented_control(
        tr("testsets.vote"),
        options,
        format_func=vote_label,
        key=key,
        on_change=functools.partial(cast_vote, service, record.test_set.name, record.id, prompt),
    )


def vote_label(option: str) -> str:
    if option in OTHER_VOTES:
        return tr(f"compare.vote.{option}")
    return tr("compare.vote.preferred", label=option)


def cast_vote(service: VisitorService, name: str, run_id: str, prompt: int) -> None:
    choice = st.session_state.get(test_vote_key(run_id, prompt))
    record = next((r for r in service.test_runs(name) if r.id == run_id), None)
    if record is None or choice is None:
        return
    try:
        if choice in OTHER_VOTES:
            service.vote_on_test_result(record, prompt, choice)
        else:
            service.vote_on_test_result(record, prompt, "preferred", "ABCD".index(choice))
    except DashboardError as error:
        service.notify(error_notice("test_vote_refused", error))


def difference_line(changes: list[CellChange]) -> str:
    """What changed since the last run, in one line."""
    changed = sum(change.answer_changed for change in changes)
    prompt_delta = sum(c.prompt_tokens_delta or 0 for c in changes)
    reply_delta = sum(c.reply_tokens_delta or 0 for c in changes)
    cost_delta = sum(c.cost_delta_usd or 0.0 for c in changes)
    return tr(
        "testsets.difference",
        changed=changed,
        total=len(changes),
        prompt=f"{prompt_delta:+,}",
        reply=f"{reply_delta:+,}",
        cost=f"{cost_delta:+.5f}",
    )


def column_totals(
    record: TestRunRecord, changes: dict[tuple[str, str], CellChange]
) -> list[dict[str, object]]:
    """One row per column: its tokens, time and cost over the run, and the change since the last."""
    rows: list[dict[str, object]] = []
    for index, spec in enumerate(record.columns):
        cells = [c for c in record.cells if c.column == index and not c.skipped and c.error is None]
        mine = [c for (_, label), c in changes.items() if label == spec.label]
        latencies = [c.latency_s for c in cells if c.latency_s is not None]
        row: dict[str, object] = {
            tr("testsets.col.column"): f"{'ABCD'[index]} · {spec.label}",
            tr("testsets.col.answered"): f"{len(cells)}/{len(record.test_set.prompts)}",
            tr("testsets.col.prompt_tokens"): sum(c.prompt_tokens or 0 for c in cells),
            tr("testsets.col.reply_tokens"): sum(c.reply_tokens or 0 for c in cells),
            tr("testsets.col.latency"): round(sum(latencies) / len(latencies), 2) if latencies else None,
            tr("testsets.col.cost"): round(sum(c.cost_usd or 0.0 for c in cells), 6),
        }
        if changes:  # a first run has nothing to differ from (the table would show "None")
            row[tr("testsets.col.changed")] = sum(c.answer_changed for c in mine)
        rows.append(row)
    return rows
