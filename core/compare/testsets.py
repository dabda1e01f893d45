"""Test sets: a named list of prompts run against 2-4 columns (personas, or one persona on other
models or settings), each prompt a fresh conversation per column, to catch regressions after a
persona or model changes.

    test_set = parse_test_set("menus", data, "menus.csv")     # text, CSV or YAML
    run = TestSetRun(test_set, make_columns, max_parallel=2)    # make_columns: fresh Columns per prompt
    run.start()                                                 # returns at once; worker threads
    run.progress()                                              # (done, total), for a progress bar
    run.cancel()                                                # stops what streams, skips the rest
    record = run.result()                                       # a TestRunRecord, once finished
    changes = compare_runs(previous_record, record)             # what changed since the last run

Each prompt is sent through `core.compare.comparison.Comparison`, so its columns stream at once and a
failing column fails alone; at most `max_parallel` prompts are in flight, so at most
`max_parallel × columns` requests. `before_each(prompt, columns)` runs before a prompt is
sent (the application service checks the deployer's limits there); an error it raises is recorded for
that prompt's cells and the run goes on.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.compare.comparison import (
    Candidate,
    Column,
    Comparison,
    ErrorInfo,
    Pick,
    PickOutcome,
    settings_summary,
)
from core.errors import ConversationStateError, DashboardError, TestSetError
from core.notices import Notice
from core.validation import problem_notices

logger = logging.getLogger(__name__)

MAX_PROMPTS = 100
MAX_PROMPT_CHARS = 8_000
MAX_FILE_BYTES = 1_000_000
#: Prompts in flight at once (each is one request per column).
DEFAULT_PARALLEL = 2

_Number = TypeVar("_Number", int, float)


class TestSet(BaseModel):
    """A named list of prompts."""

    __test__ = False  # not a pytest class, whatever its name
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    prompts: tuple[str, ...] = Field(min_length=1, max_length=MAX_PROMPTS)

    @field_validator("prompts")
    @classmethod
    def _prompts_fit(cls, prompts: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(prompt.strip() for prompt in prompts)
        for number, prompt in enumerate(cleaned, start=1):
            if not prompt:
                raise ValueError(f"prompt {number} is empty")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(
                    f"prompt {number} has {len(prompt):,} characters (at most {MAX_PROMPT_CHARS:,})"
                )
        return cleaned


def parse_test_set(name: str, data: bytes, filename: str = "prompts.txt") -> TestSet:
    """Prompts from a file: `.csv` (a `prompt` column, else the first), `.yaml`/`.yml` (a list of
    prompts, or `{name, prompts}`), anything else one prompt per non-empty line."""
    if len(data) > MAX_FILE_BYTES:
        raise TestSetError("too_large", file=filename, limit=MAX_FILE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TestSetError("not_utf8", file=filename) from None
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    prompts: list[str]
    if suffix == "csv":
        prompts = _csv_prompts(text, filename)
    elif suffix in ("yaml", "yml"):
        name, prompts = _yaml_prompts(text, filename, name)
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    try:
        return TestSet(name=name, prompts=tuple(prompts))
    except ValidationError as exc:
        raise TestSetError("invalid", file=filename, problem=problem_notices(exc)) from None


def _csv_prompts(text: str, filename: str) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise TestSetError("invalid", file=filename, problem=str(exc)) from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("prompt") if "prompt" in header else 0
    body = rows[1:] if "prompt" in header else rows
    return [row[column] for row in body if column < len(row) and row[column].strip()]


def _yaml_prompts(text: str, filename: str, name: str) -> tuple[str, list[str]]:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TestSetError("invalid", file=filename, problem=str(exc).splitlines()[0]) from None
    if isinstance(data, dict):
        name = str(data.get("name") or name)
        data = data.get("prompts")
    if not isinstance(data, list) or not all(isinstance(item, str | int | float) for item in data):
        raise TestSetError("invalid", file=filename, problem=Notice(code="test_set_not_a_list"))
    return name, [str(item) for item in data]


# --- Results ------------------------------------------------------------------------------------


class ColumnSpec(BaseModel):
    """Who answered in a column: a persona on a model with its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    persona_id: str | None
    model: str
    context_budget: int
    #: What tells two columns of one persona on one model apart (`core.compare.comparison.settings_summary`).
    settings: str = ""


class Cell(BaseModel):
    """One column's answer to one prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: int = Field(ge=0)
    column: int = Field(ge=0)
    answer: str = ""
    prompt_tokens: int | None = None
    reply_tokens: int | None = None
    latency_s: float | None = None
    cost_usd: float | None = None
    error: ErrorInfo | None = None
    #: Not run: the run was cancelled first.
    skipped: bool = False


class PromptVote(BaseModel):
    """The user's vote on one prompt's answers: one column preferred, a tie, or all bad."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: int = Field(ge=0)
    outcome: PickOutcome
    column: int | None = None


class TestRunRecord(BaseModel):
    """One run of a test set: every prompt's answer in every column, with its figures."""

    __test__ = False
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    test_set: TestSet
    columns: tuple[ColumnSpec, ...]
    cells: tuple[Cell, ...]
    started_at: datetime
    seconds: float
    cancelled: bool = False
    votes: tuple[PromptVote, ...] = ()

    def cell(self, prompt: int, column: int) -> Cell | None:
        return next((c for c in self.cells if c.prompt == prompt and c.column == column), None)

    def vote(self, prompt: int, outcome: PickOutcome, column: int | None = None) -> TestRunRecord:
        """This record with the vote on `prompt` cast (or changed)."""
        if not 0 <= prompt < len(self.test_set.prompts):
            raise ConversationStateError(f"This run has no prompt {prompt + 1}.").coded(
                "run_no_prompt", number=prompt + 1
            )
        if (outcome == "preferred") != (column is not None) or (column or 0) >= len(self.columns):
            raise ConversationStateError("Name the preferred column, and only for a preferred answer.")
        cell = self.cell(prompt, column) if column is not None else None
        if column is not None and (cell is None or cell.skipped or cell.error is not None):
            raise ConversationStateError(f"Column {column + 1} has no answer to prompt {prompt + 1}.").coded(
                "run_no_answer", column=column + 1, number=prompt + 1
            )
        votes = [v for v in self.votes if v.prompt != prompt]
        votes.append(PromptVote(prompt=prompt, outcome=outcome, column=column))
        return self.model_copy(update={"votes": tuple(sorted(votes, key=lambda v: v.prompt))})

    def picks(self) -> list[Pick]:
        """The votes as comparison picks, for the leaderboard."""
        candidates = tuple(
            Candidate(label=c.label, persona_id=c.persona_id, model=c.model, settings=c.settings)
            for c in self.columns
        )
        picks = []
        for vote in self.votes:
            winner = self.columns[vote.column] if vote.column is not None else None
            picks.append(
                Pick(
                    id=f"{self.id}-{vote.prompt}",
                    round=vote.prompt + 1,
                    outcome=vote.outcome,
                    column=vote.column,
                    label=winner.label if winner else None,
                    persona_id=winner.persona_id if winner else None,
                    model=winner.model if winner else None,
                    blind=False,
                    candidates=candidates,
                    at=self.started_at,
                )
            )
        return picks


class CellChange(BaseModel):
    """One prompt in one column, this run against the last."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    column: str
    answer_changed: bool
    previous_answer: str
    answer: str
    prompt_tokens_delta: int | None
    reply_tokens_delta: int | None
    cost_delta_usd: float | None


def compare_runs(previous: TestRunRecord, current: TestRunRecord) -> list[CellChange]:
    """Every cell of `current` that `previous` also ran (matched by prompt text and column label),
    with whether its answer changed and its token and cost deltas."""
    earlier: dict[tuple[str, str], Cell] = {}
    for cell in previous.cells:
        if not cell.skipped:
            key = (previous.test_set.prompts[cell.prompt], previous.columns[cell.column].label)
            earlier[key] = cell
    changes = []
    for cell in current.cells:
        prompt, column = current.test_set.prompts[cell.prompt], current.columns[cell.column].label
        before = earlier.get((prompt, column))
        if before is None or cell.skipped:
            continue
        changes.append(
            CellChange(
                prompt=prompt,
                column=column,
                answer_changed=cell.answer.strip() != before.answer.strip(),
                previous_answer=before.answer,
                answer=cell.answer,
                prompt_tokens_delta=_delta(cell.prompt_tokens, before.prompt_tokens),
                reply_tokens_delta=_delta(cell.reply_tokens, before.reply_tokens),
                cost_delta_usd=_delta(cell.cost_usd, before.cost_usd),
            )
        )
    return changes


def _delta(now: _Number | None, before: _Number | None) -> _Number | None:
    return None if now is None or before is None else now - before


# --- Running ------------------------------------------------------------------------------------


class TestSetRun:
    """One run of a test set on worker threads; see the module docstring."""

    __test__ = False

    def __init__(
        self,
        test_set: TestSet,
        make_columns: Callable[[], Sequence[Column]],
        *,
        max_parallel: int = DEFAULT_PARALLEL,
        before_each: Callable[[str, Sequence[Column]], None] | None = None,
    ) -> None:
        self.test_set = test_set
        self._make_columns = make_columns
        self._max_parallel = max(1, max_parallel)
        self._before_each = before_each
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._in_flight: set[Comparison] = set()
        self._cells: dict[tuple[int, int], Cell] = {}
        self._columns: tuple[ColumnSpec, ...] = ()
        self._done = 0
        self._started_at = datetime.now(UTC)
        self._started = 0.0
        self._seconds = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise DashboardError("This test set run has already started.")
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._run_all, name=f"test-set {self.test_set.name}", daemon=True
        )
        self._thread.start()

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._done, len(self.test_set.prompts)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def cancel(self) -> None:
        """Skip the prompts not yet sent and stop the ones streaming (they keep what arrived)."""
        self._cancelled.set()
        with self._lock:
            running = list(self._in_flight)
        for comparison in running:
            comparison.stop_all()

    def result(self) -> TestRunRecord:
        if not self._finished.is_set():
            raise DashboardError("This test set run has not finished.")
        with self._lock:
            cells = tuple(self._cells[key] for key in sorted(self._cells))
            return TestRunRecord(
                test_set=self.test_set,
                columns=self._columns,
                cells=cells,
                started_at=self._started_at,
                seconds=self._seconds,
                cancelled=self._cancelled.is_set(),
            )

    def _run_all(self) -> None:
        try:
            with ThreadPoolExecutor(self._max_parallel, thread_name_prefix="test-set") as pool:
                for _ in pool.map(self._run_one, range(len(self.test_set.prompts))):
                    pass
        finally:
            self._seconds = time.monotonic() - self._started
            self._finished.set()

    def _run_one(self, index: int) -> None:
        try:
            self._run_prompt(index)
        except Exception as error:  # a bug must not leave the run unfinished: record it, say it
            logger.exception("Test set prompt %d failed", index + 1)
            info = ErrorInfo(kind=type(error).__name__, message="An internal error stopped this prompt.")
            self._record(
                index, [Cell(prompt=index, column=n, error=info) for n in range(len(self._columns) or 1)]
            )

    def _run_prompt(self, index: int) -> None:
        prompt = self.test_set.prompts[index]
        columns = self._make_columns()
        specs = tuple(
            ColumnSpec(
                label=column.label,
                persona_id=column.session.conversation.persona_id,
                model=column.session.settings.model,
                context_budget=column.session.settings.context_budget,
                settings=settings_summary(column.session.settings),
            )
            for column in columns
        )
        with self._lock:
            if not self._columns:
                self._columns = specs
        if self._cancelled.is_set():
            self._record(index, [Cell(prompt=index, column=n, skipped=True) for n in range(len(columns))])
            return
        try:
            if self._before_each is not None:
                self._before_each(prompt, columns)
        except DashboardError as error:
            info = ErrorInfo.of(error)
            self._record(index, [Cell(prompt=index, column=n, error=info) for n in range(len(columns))])
            return
        comparison = Comparison(columns)
        with self._lock:
            self._in_flight.add(comparison)
        try:
            comparison.send(prompt)
            comparison.wait()
        finally:
            with self._lock:
                self._in_flight.discard(comparison)
        snapshot = comparison.snapshot()
        cells = []
        for n, view in enumerate(snapshot.columns):
            figures = view.figures
            cells.append(
                Cell(
                    prompt=index,
                    column=n,
                    answer=view.text,
                    prompt_tokens=figures.prompt_tokens if figures else None,
                    reply_tokens=figures.reply_tokens if figures else None,
                    latency_s=figures.total_s if figures else None,
                    cost_usd=figures.cost_usd if figures else None,
                    error=figures.error if figures else None,
                )
            )
        self._record(index, cells)

    def _record(self, index: int, cells: list[Cell]) -> None:
        with self._lock:
            for cell in cells:
                self._cells[(index, cell.column)] = cell
            self._done += 1
