"""A token estimate calibrated to what the server reports, for models tiktoken cannot count.

A server with no tokenize endpoint (Ollama, LM Studio, most hosted APIs) still reports
`usage.prompt_tokens` and `usage.completion_tokens` after each call. After every turn the local
estimate is fitted to those reports, per model, by least squares:

    reported prompt tokens ≈ content · w + b·messages + c
    reported reply tokens  ≈ content · w + e

- `content`, per script class: the text's tokens in the two vocabularies bundled with the
  dashboard, o200k and cl100k, each split into tokens of ASCII bytes (Latin words) and the
  others, and its CJK characters, digits, punctuation marks and emoji code points. A model's
  own tokenizer is seldom either vocabulary, but its count is close to a blend of them, class
  by class: byte-level BPE vocabularies differ little on English and much on Chinese (o200k
  merges common words that cl100k splits into characters and bytes), small sentencepiece
  vocabularies take about one token per CJK character and several bytes per emoji, and some
  split every digit where others group three;
- `messages`: each message's framing (a chat template's role markers and separators);
- `c`: once per prompt (generation prompt, BOS, ...); `e`: once per reply (its end-of-turn token).

A reply's reported tokens measure the content on one message alone, without framing, which
separates the content terms from the framing ones; a reply that reports far more than its text
could take (a reasoning model's hidden thinking) is left out. A message then counts
`content · w + b` tokens (so a policy that drops it knows what it frees), a prompt `c` more.

The fit (numpy, on the normal equations) weighs relative errors (the goal is a few percent),
recent turns more than old ones
(`RECENCY`), and is pulled lightly toward the uncalibrated estimate (`PRIOR`: o200k with the
OpenAI framing), so one turn already moves it without wild swings; one report far off the rest
(a server that cut the prompt to its own window) is left out.

While it learns, calls are fitted to a budget shrunk by a safety margin (`Fit.margin`): 10% with
no report, at least 5% while fewer than 3 turns have been fitted (and at least the error seen so
far), then 1.5 times the largest error of the recent calibrated estimates, at least 2%.

The calibration travels with the conversation (`Conversation.calibration`, in the export): only
the observations are kept (`to_dict`/`from_dict`); fits are recomputed from them, never trusted.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from core.counting.tokens import (
    METHOD_CALIBRATED,
    METHOD_UNCALIBRATED,
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    Tokenizer,
    get_encoding,
)

#: Observations kept per model (the oldest go first); fits weigh recent ones more anyway.
MAX_OBSERVATIONS: Final = 64
#: Models a conversation keeps calibrations for.
MAX_MODELS: Final = 16
MAX_COUNT: Final = 1_000_000_000

#: The uncalibrated estimate as parameters (w, b, c, e): o200k content, the cookbook framing
#: (3 tokens per message plus its one-token role), reply priming, nothing more per reply.
PRIOR: Final = (
    *(1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    float(TOKENS_PER_MESSAGE + 1),
    float(REPLY_PRIMING),
    0.0,
)
#: How far each parameter may stray from PRIOR before that costs as much as a 1% error on one
#: turn. The framing parameters are held close, so a first report mostly moves the content terms.
SCALE: Final = (1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 10.0, 2.0)
RIDGE: Final = 1e-4
#: Each older turn weighs this much less than the next.
RECENCY: Final = 0.8
#: A reply's report weighs this much of its turn's prompt report.
REPLY_WEIGHT: Final = 0.5
#: A reply reporting more than this many times its o200k count (plus 8) held hidden tokens.
REPLY_PLAUSIBLE: Final = 3.0

MARGIN_UNCALIBRATED: Final = 0.10
MARGIN_LEARNING: Final = 0.05
MARGIN_FLOOR: Final = 0.02
MARGIN_CAP: Final = 0.5
#: Turns fitted before the margin may shrink below MARGIN_LEARNING.
TURNS_TO_LEARN: Final = 3
#: A report this far off the fit (relative), and 5 times the typical one, is left out.
OUTLIER: Final = 0.1
#: A server that reports more than CUT_EXACT (relative) less than the prompt was counted,
#: plus twice the margin an estimate's count may be short by, read less than it was sent: it cut
#: the prompt to its own context window without saying so (Ollama does, to its num_ctx). Such a
#: turn is not a calibration sample. Below MIN_CUT tokens short, it is not called a cut.
CUT_EXACT: Final = 0.05
MIN_CUT: Final = 16
#: The budget offered after a cut: this share of what the server read.
CUT_BUDGET_SHARE: Final = 0.9

_CJK = re.compile(
    "[\u2e80-\u2fff\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f]"
)

_DIGIT = re.compile(r"[0-9\uff10-\uff19]")
_PUNCTUATION = re.compile(
    r"[!-/:-@\[-`{-~\u2000-\u206f\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\U0001f1e6-\U0001f1ff]")

#: What the estimate knows of a text, per script class: its o200k tokens of ASCII bytes (Latin
#: words, mostly) and the others, the same for cl100k, and its CJK characters, digits,
#: punctuation marks and emoji code points. Tokenizers differ by class: one splits every digit,
#: another groups three; a small vocabulary spends a token per CJK character and four bytes
#: per emoji; punctuation merges with spaces in one and not in another.
Content = tuple[int, int, int, int, int, int, int, int]
CONTENT_SIZE: Final = 8
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
_NO_CONTENT: Final = (0, 0, 0, 0, 0, 0, 0, 0)
#: A message's name costs one ASCII token more in both vocabularies.
_NAME_CONTENT: Final = (1, 0, 1, 0, 0, 0, 0, 0)


def _padded(value: Any) -> Any:
    """A content tuple exported before the digit, punctuation and emoji classes (5 counts), with
    those counted as none: it still fits, and ages out of the fit as new turns come."""
    if isinstance(value, (list, tuple)) and len(value) == 5:
        return (*value, 0, 0, 0)
    return value


ContentField = Annotated[
    tuple[Count, Count, Count, Count, Count, Count, Count, Count], BeforeValidator(_padded)
]


@dataclass(frozen=True)
class SilentTruncation:
    """A server read `read` of the `sent` prompt tokens: its context window is probably about
    `read`, and `suggested_budget` keeps the prompt below it."""

    read: int
    sent: int

    @property
    def suggested_budget(self) -> int:
        return max(64, math.floor(self.read * CUT_BUDGET_SHARE))


def silent_truncation(
    counted: int, reported: int | None, *, margin: float = 0.0, cached: int = 0
) -> SilentTruncation | None:
    """Whether a server that reported `reported` prompt tokens (`cached` of them from its cache)
    for a prompt counted as `counted` (exactly, or by an estimate that may be `margin` short)
    read only part of it."""
    if reported is None:
        return None
    limit = counted * (1 - CUT_EXACT - 2 * margin)
    # A server reporting only the uncached part of the prompt has not cut it.
    if reported >= limit or reported + cached >= limit or counted - reported < MIN_CUT:
        return None
    return SilentTruncation(read=reported, sent=counted)


# --- what is kept --------------------------------------------------------------------------


class Observation(BaseModel):
    """One turn: its prompt and reply as the estimate saw them, and as the server reported them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The prompt's `Content`, summed over its messages.
    content: ContentField
    messages: int = Field(ge=1, le=MAX_COUNT)
    reported: int = Field(ge=1, le=MAX_COUNT)
    #: The estimate the prompt was sent with, and how many turns that estimate was fitted from.
    predicted: int = Field(ge=0, le=MAX_COUNT)
    basis: int = Field(ge=0, le=MAX_OBSERVATIONS)
    #: The reply's `Content`, and its reported tokens, when reported.
    reply: ContentField | None = None
    reported_reply: int | None = Field(None, ge=1, le=MAX_COUNT)

    @property
    def error(self) -> float:
        """The estimate's error relative to the report (positive: the estimate was short)."""
        return (self.reported - self.predicted) / self.reported

    @property
    def prompt(self) -> Features:
        return Features(self.content, self.messages)

    def rows(self) -> list[tuple[tuple[float, ...], float, float]]:
        """Least-squares rows: (features, reported, weight before recency)."""
        rows = [(self.prompt.vector(), float(self.reported), 1.0)]
        reply, reported = self.reply, self.reported_reply
        if reply is not None and reported and reported <= REPLY_PLAUSIBLE * (reply[0] + reply[1]) + 8:
            rows.append(((*(float(x) for x in reply), 0.0, 0.0, 1.0), float(reported), REPLY_WEIGHT))
        return rows


class ModelCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observations: list[Observation] = Field(default_factory=list, max_length=MAX_OBSERVATIONS)


class CalibrationRecord(BaseModel):
    """A conversation's calibration as exported: per model, the turns it was fitted from."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelCalibration] = Field(default_factory=dict, max_length=MAX_MODELS)


# --- features --------------------------------------------------------------------------------


_non_ascii_tokens: dict[str, frozenset[int]] = {}
_non_ascii_lock = threading.Lock()


def _non_ascii(encoding_name: str) -> frozenset[int]:
    """Ids of the tokens of `encoding_name` that hold a byte beyond ASCII (built once)."""
    if encoding_name not in _non_ascii_tokens:
        with _non_ascii_lock:
            if encoding_name not in _non_ascii_tokens:
                ranks = get_encoding(encoding_name)._mergeable_ranks
                _non_ascii_tokens[encoding_name] = frozenset(r for b, r in ranks.items() if max(b) >= 0x80)
    return _non_ascii_tokens[encoding_name]


def content_of(text: str) -> Content:
    """What the estimate knows of `text` (see `Content`)."""
    counts: list[int] = []
    for name in ("o200k_base", "cl100k_base"):
        tokens = get_encoding(name).encode(text, disallowed_special=())
        non_ascii = _non_ascii(name)
        other = sum(1 for token in tokens if token in non_ascii)
        counts += [len(tokens) - other, other]
    classes = (len(_CJK.findall(text)), len(_DIGIT.findall(text)), len(_PUNCTUATION.findall(text)))
    return (*counts[:4], *classes, len(_EMOJI.findall(text)))  # type: ignore[return-value]


def _add(a: Sequence[int], b: Sequence[int]) -> Content:
    return tuple(x + y for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


class ContentCounts:
    """`Content` of message texts, each text counted once."""

    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._counts: dict[str, Content] = {}

    def __call__(self, text: str) -> Content:
        counts = self._counts.get(text)
        if counts is None:
            if len(self._counts) >= self._limit:
                self._counts.clear()
            counts = self._counts[text] = content_of(text)
        return counts

    def message(self, message: Mapping[str, Any]) -> Content:
        """The content of a message's values other than its role (a name costs one token more,
        as in the OpenAI framing)."""
        total: Content = _NO_CONTENT
        for key, value in message.items():
            if key == "role":
                continue
            total = _add(total, self(str(value)))
            if key == "name":
                total = _add(total, _NAME_CONTENT)
        return total


@dataclass(frozen=True)
class Features:
    """What the estimate knows of one prompt: its content and how many messages frame it."""

    content: Content
    messages: int

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]], counts: ContentCounts) -> Features:
        total: Content = _NO_CONTENT
        for message in messages:
            total = _add(total, counts.message(message))
        return cls(total, len(messages))

    def vector(self) -> tuple[float, ...]:
        return (*(float(x) for x in self.content), float(self.messages), 1.0, 0.0)


# --- the fit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """w per unit of `Content`; b per message, c per prompt, e per reply."""

    w: tuple[float, ...]
    b: float
    c: float
    e: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Params:
        return cls(tuple(values[:CONTENT_SIZE]), *values[CONTENT_SIZE:])

    def content(self, content: Content) -> float:
        return sum(weight * count for weight, count in zip(self.w, content, strict=True))

    def prompt(self, features: Features) -> float:
        return self.content(features.content) + self.b * features.messages + self.c


PRIOR_PARAMS: Final = Params.of(PRIOR)


@dataclass(frozen=True)
class Fit:
    """The calibration of one model as of its latest turn."""

    params: Params
    #: Turns fitted from.
    turns: int
    #: Fraction of the budget held back while the estimate may still be short.
    margin: float
    #: The largest relative error of the recent calibrated estimates (None: none measured yet).
    error: float | None


def _least_squares(observations: Sequence[Observation]) -> Params:
    """Weighted ridge least squares on relative errors, recent turns weighing more, pulled
    toward PRIOR (numpy solves the normal equations)."""
    rows, targets, weights = [], [], []
    newest = len(observations) - 1
    for index, observation in enumerate(observations):
        for x, reported, share in observation.rows():
            rows.append(x)
            targets.append(reported)
            weights.append(share * RECENCY ** (newest - index) / reported**2)
    features, reported_tokens, weight = np.array(rows), np.array(targets), np.array(weights)
    prior, scale = np.array(PRIOR), np.array(SCALE)
    pull = RIDGE / scale**2
    matrix = features.T @ (features * weight[:, None]) + np.diag(pull)
    vector = features.T @ (weight * reported_tokens) + pull * prior
    try:
        solution = np.linalg.solve(matrix, vector)
    except np.linalg.LinAlgError:
        return PRIOR_PARAMS
    if not np.all(np.isfinite(solution)):
        return PRIOR_PARAMS
    return Params.of([float(v) for v in solution])


def fit_turns(observations: Sequence[Observation]) -> Fit:
    """The calibration these turns give: parameters, margin and the error measured so far."""
    if not observations:
        return Fit(PRIOR_PARAMS, 0, MARGIN_UNCALIBRATED, None)
    params = _least_squares(observations)
    if len(observations) >= TURNS_TO_LEARN:
        residuals = [abs(o.reported - params.prompt(o.prompt)) / o.reported for o in observations]
        worst = max(range(len(residuals)), key=residuals.__getitem__)
        typical = sorted(residuals)[len(residuals) // 2]
        if residuals[worst] > max(OUTLIER, 5 * typical):
            params = _least_squares([o for i, o in enumerate(observations) if i != worst])
    turns = len(observations)
    # The errors of estimates made once calibrated (from at least one turn; two once there
    # are), which is what the next estimate is like.
    recent = [abs(o.error) for o in observations[-3:] if o.basis >= max(min(turns - 1, 2), 1)]
    error = max(recent) if recent else None
    if turns < TURNS_TO_LEARN:
        # After one turn only the uncalibrated estimate's error is known: hold back that much.
        seen = recent or [abs(o.error) for o in observations[-1:]]
        margin = max(MARGIN_LEARNING, max(seen))
    else:
        margin = max(MARGIN_FLOOR, 1.5 * max(recent, default=MARGIN_LEARNING))
    return Fit(params, turns, min(margin, MARGIN_CAP), error)


# --- per conversation ----------------------------------------------------------------------


class Calibration:
    """A conversation's calibrations, per model: the turns observed and the fit they give."""

    def __init__(self, record: CalibrationRecord | None = None) -> None:
        self._observations: dict[str, list[Observation]] = {
            model: list(calibration.observations)
            for model, calibration in (record.models if record else {}).items()
        }
        self._fits: dict[str, Fit] = {}
        #: Content counts of message texts, shared by this conversation's estimates.
        self.content = ContentCounts()

    def __bool__(self) -> bool:
        return any(self._observations.values())

    def observations(self, model: str) -> list[Observation]:
        return list(self._observations.get(model, ()))

    def fit(self, model: str) -> Fit:
        if model not in self._fits:
            self._fits[model] = fit_turns(self._observations.get(model, ()))
        return self._fits[model]

    def features(self, messages: Sequence[Mapping[str, Any]]) -> Features:
        return Features.of(messages, self.content)

    def observe(
        self,
        model: str,
        features: Features,
        *,
        reported: int,
        predicted: int,
        basis: int,
        reply: str | None = None,
        reported_reply: int | None = None,
    ) -> Fit:
        """Add one turn (the prompt's features, the server's report, the estimate it was sent
        with and how many turns that estimate was fitted from; the reply's text and its reported
        tokens, if any); the new fit."""
        reply_content = self.content(reply) if reply is not None and reported_reply else None
        observation = Observation(
            content=features.content,
            messages=max(features.messages, 1),
            reported=reported,
            predicted=min(max(predicted, 0), MAX_COUNT),
            basis=min(basis, MAX_OBSERVATIONS),
            reply=reply_content,
            reported_reply=reported_reply if reply_content else None,
        )
        if model not in self._observations and len(self._observations) >= MAX_MODELS:
            self._observations.pop(next(iter(self._observations)))
        kept = self._observations.setdefault(model, [])
        kept.append(observation)
        del kept[:-MAX_OBSERVATIONS]
        self._fits.pop(model, None)
        return self.fit(model)

    def tokenizer(self, base: Tokenizer, *, context_window: int | None = None) -> CalibratedTokenizer:
        """An estimate for `base.model` with this calibration's current fit."""
        return CalibratedTokenizer(
            model=base.model,
            encoding_name=base.encoding_name,
            exact=False,
            params=self.fit(base.model).params,
            context_window=context_window,
            calibration=self,
        )

    # --- export ----------------------------------------------------------------------------

    def record(self) -> CalibrationRecord:
        return CalibrationRecord(
            models={
                model: ModelCalibration(observations=observations)
                for model, observations in self._observations.items()
                if observations
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the store may keep it as is); `from_dict` reads it back."""
        return self.record().model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Read `to_dict()` output; raises ValueError on anything else."""
        try:
            return cls(CalibrationRecord.model_validate(data))
        except ValidationError as exc:
            raise ValueError(f"Not a calibration: {exc.error_count()} problem(s)") from None


@dataclass(frozen=True)
class CalibratedTokenizer(Tokenizer):
    """Counts a model's tokens with the calibrated estimate (see the module docstring)."""

    params: Params = PRIOR_PARAMS
    #: The server's context window, when it says (a prompt and its reply must fit in it).
    context_window: int | None = None
    calibration: Calibration = field(default_factory=Calibration, compare=False, repr=False)

    @property
    def fit(self) -> Fit:
        return self.calibration.fit(self.model)

    @property
    def reply_priming(self) -> int:
        return round(self.params.c)

    @property
    def margin(self) -> float:
        return self.fit.margin

    @property
    def method(self) -> str:
        current = self.fit
        if current.turns == 0:
            return METHOD_UNCALIBRATED
        error = current.margin if current.error is None else current.error
        return f"{METHOD_CALIBRATED} (±{100 * error:.1f}%)"

    def count_text(self, text: str) -> int:
        return max(0, round(self.params.content(self.calibration.content(text))))

    def count_message(self, message: Mapping[str, Any]) -> int:
        content = self.calibration.content.message(message)
        return max(1, round(self.params.content(content) + self.params.b))

    def prompt_budget(self, budget: int, max_reply_tokens: int) -> int:
        return shrink(cap_to_window(budget, self.context_window, max_reply_tokens), self.fit.margin)


def cap_to_window(budget: int, context_window: int | None, max_reply_tokens: int) -> int:
    """`budget`, capped so that a prompt and its reply fit in the server's context window."""
    if context_window is None:
        return budget
    return max(1, min(budget, context_window - max_reply_tokens))


def shrink(budget: int, margin: float) -> int:
    """The part of `budget` an estimate may fill when it may be short by `margin`."""
    return max(1, math.floor(budget / (1 + margin)))


def changed_materially(old: Params, new: Params, prompts: Iterable[Features], *, tolerance: float) -> bool:
    """Whether `new` counts any of these prompts more than `tolerance` (relative) off `old`."""
    for features in prompts:
        before, after = old.prompt(features), new.prompt(features)
        if abs(after - before) > tolerance * max(abs(before), 1.0):
            return True
    return False
