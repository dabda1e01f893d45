"""Which method counts a conversation's tokens, and keeping that count honest turn by turn.

    counting = counting_for(backend)       # one per backend: what it learned about the server
    counting.attach(conversation)          # no network: install the right tokenizer
    conversation.tokenizer.method          # "exact (tiktoken)", "server tokenizer",
                                           # "calibrated estimate (±1.2%)", "uncalibrated estimate"
    counting.context_window(model)         # the server's window, once known (None: not reported)

`ChatSession` calls `before_fit`, `after_fit` and `after_turn` around each call; nothing else needs
to. The methods, in order of preference:

1. **exact (tiktoken)** — OpenAI models tiktoken knows (and any backend that is not an
   OpenAI-compatible server, e.g. the offline model): `core.counting.tokens`, nothing to learn.
2. **server tokenizer** — the server offers vLLM's or llama.cpp's tokenize endpoint
   (`core.counting.server_tokens`; probed once per server and model, the answer kept). Counts are the
   server's own. Each message is counted once, when it is new: its count is what it adds to
   the prompt before it (one request per new message, so a turn asks for its user message and,
   after the reply, for the reply). Whether chat-template framing is additive (a message costs
   the same wherever it stands, so dropping an exchange frees exactly its counts) is measured
   once per server and model on a probe conversation, and checked again on every turn (the
   whole prompt's count must equal the sum of its messages' counts, and the server's reported
   usage must equal the count). Additive templates (ChatML/Qwen, Llama 3) use the per-message
   counts as they are. Templates that are not (Gemma and Mistral fold the system prompt into a
   user message; some templates drop earlier reasoning) keep per-message counts only as a
   guide: every prompt a policy changed is counted whole before it is sent, and trimmed
   further if it is over the budget. A server that fails to count (timeout, error) is asked
   again after `RETRY_AFTER_S`; meanwhile the calibrated estimate counts, with its margin.
3. **calibrated estimate** — no tokenize endpoint (Ollama, LM Studio, hosted APIs): the o200k
   estimate fitted to the usage the server reports after each turn (`core.counting.calibration`), with a
   safety margin on the budget while it learns. Its error is shown in the label.
4. **uncalibrated estimate** — the same before any turn reported usage.

Where the server reports a context window (vLLM: `max_model_len` in `/v1/models` and in
/tokenize's answer; llama.cpp: `n_ctx` in /props) the prompt budget is capped so that a prompt
and its reply fit in it (`Conversation.context_budget`; the setting itself is unchanged).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from core.counting.calibration import (
    CalibratedTokenizer,
    Features,
    Params,
    cap_to_window,
    changed_materially,
)
from core.counting.server_tokens import TokenizeClient, TokenizeFailed, TokenizeKind
from core.counting.tokens import METHOD_SERVER, Tokenizer, tokenizer_for
from core.errors import DashboardError, PromptTooLong
from core.providers.backends import ChatBackend

if TYPE_CHECKING:
    from core.chat.context import ContextPolicy
    from core.chat.conversation import Conversation, Turn

log = logging.getLogger(__name__)

#: Seconds before a server that failed to count (timeout, 5xx) is asked again.
RETRY_AFTER_S: Final = 300.0
#: Requests one hook may make to count messages not counted yet (a reloaded conversation);
#: messages beyond are estimated, and the prompt is then counted whole before it is sent.
MAX_COUNT_REQUESTS: Final = 24
#: A prompt over budget is counted again after each further trim, at most this often.
MAX_REFITS: Final = 16
#: A new calibration is installed (every message recounted) only when it moves some in-context
#: prompt by more than this.
RECOUNT_TOLERANCE: Final = 0.005
#: Exact totals remembered per conversation (the prompt before and after the newest message).
_TOTALS_KEPT: Final = 8
#: The probe conversation that measures whether a chat template's framing is additive.
_PROBE: Final = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "北京烤鸭怎么吃？"},
    {"role": "assistant", "content": "Wrap the skin in a pancake with scallion and sweet bean sauce."},
    {"role": "user", "content": "And in Chinese? 用中文再说一遍。"},
)

MessageKey = tuple[tuple[str, str], ...]


def _key(message: Mapping[str, Any]) -> MessageKey:
    return tuple((str(name), str(value)) for name, value in message.items())


# --- what the server taught us -------------------------------------------------------------


@dataclass
class ServerModel:
    """What a server said about one model: its tokenize API and its context window."""

    #: None: it has no tokenize endpoint (or not for this model): counts are calibrated.
    kind: TokenizeKind | None = None
    context_window: int | None = None
    #: Whether the chat template's framing is additive (None: not measured yet).
    additive: bool | None = None
    #: While set (a monotonic time), the server failed to count; it is asked again after it.
    failed_until: float | None = None
    #: The server's count differed from the usage it reported (so its counts are not trusted).
    disagreements: int = 0


@dataclass
class _ServerCounts:
    """One conversation's counts from the server (per message, and whole prompts), for one model."""

    model: str
    messages: dict[MessageKey, int] = field(default_factory=dict)
    totals: OrderedDict[tuple[MessageKey, ...], int] = field(default_factory=OrderedDict)
    #: Exact prompt count minus the sum of what its messages count (0 when framing is additive).
    offset: int = 0
    #: Requests made for this conversation.
    requests: int = 0


@dataclass(frozen=True)
class ServerTokenizer(Tokenizer):
    """Counts with the server's tokenizer: a message it counted costs what the server said; one
    it has not counted yet (the newest, before its turn) is estimated by `fallback`."""

    fallback: Tokenizer | None = None
    context_window: int | None = None
    counts: _ServerCounts = field(default_factory=lambda: _ServerCounts(""), compare=False, repr=False)

    @property
    def _estimate(self) -> Tokenizer:
        return self.fallback or tokenizer_for(self.model)

    @property
    def reply_priming(self) -> int:
        return self.counts.offset

    @property
    def method(self) -> str:
        return METHOD_SERVER

    def counted(self, message: Mapping[str, Any]) -> bool:
        return _key(message) in self.counts.messages

    def count_text(self, text: str) -> int:
        return self._estimate.count_text(text)

    def count_message(self, message: Mapping[str, Any]) -> int:
        count = self.counts.messages.get(_key(message))
        return self._estimate.count_message(message) if count is None else count

    def prompt_budget(self, budget: int, max_reply_tokens: int) -> int:
        return cap_to_window(budget, self.context_window, max_reply_tokens)


@dataclass(frozen=True)
class CountingStatus:
    """How a conversation's tokens are counted, for the page."""

    #: "exact (tiktoken)", "server tokenizer", "calibrated estimate (±1.2%)", "uncalibrated estimate".
    method: str
    exact: bool
    #: The calibrated estimate's recent relative error (None: not an estimate, or not measured yet).
    error: float | None
    #: Fraction of the budget held back while the estimate may be short (0 when counts are exact).
    margin: float
    #: Turns the calibration was fitted from.
    calibrated_turns: int
    #: The server's context window, when it reported one.
    context_window: int | None
    #: The conversation's budget setting, and the prompt budget calls are fitted to (the setting
    #: capped to the context window less the reply cap, less the margin).
    budget_setting: int
    budget: int


@dataclass(frozen=True)
class _Pending:
    """The prompt a call was sent with, until its turn reports usage."""

    model: str
    messages: tuple[MessageKey, ...]
    features: Features
    predicted: int
    basis: int


# --- per backend ---------------------------------------------------------------------------


class Counting:
    """How the conversations on one backend count their tokens (see the module docstring).

    Never breaks a turn: a server that fails to count leaves the estimate in charge.
    """

    def __init__(self, backend: ChatBackend | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Only a backend whose server counts (or reports usage worth calibrating to) is asked.
        counted_there = backend is not None and backend.capabilities.counting == "server"
        self._client = backend.tokenize_client() if backend is not None and counted_there else None
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, ServerModel] = {}
        self._counts: weakref.WeakKeyDictionary[Conversation, _ServerCounts] = weakref.WeakKeyDictionary()
        self._pending: weakref.WeakKeyDictionary[Conversation, _Pending] = weakref.WeakKeyDictionary()

    # --- for the page (no network) -------------------------------------------------------

    def counts(self, model: str) -> bool:
        """Whether conversations on `model` are counted here (False: tiktoken's count stands)."""
        return self._client is not None and not tokenizer_for(model).exact

    def server_model(self, model: str) -> ServerModel | None:
        """What the server said about `model` so far (None: not asked yet)."""
        return self._models.get(model)

    def context_window(self, model: str) -> int | None:
        """The server's context window for `model`, once it said (None: not reported)."""
        known = self._models.get(model)
        return known.context_window if known else None

    def describe(self, conversation: Conversation) -> CountingStatus:
        """What the page shows about how `conversation` is counted (installs the method first)."""
        tokenizer = self.attach(conversation)
        estimate = tokenizer.fallback if isinstance(tokenizer, ServerTokenizer) else tokenizer
        fit = estimate.fit if isinstance(estimate, CalibratedTokenizer) else None
        return CountingStatus(
            method=tokenizer.method,
            exact=tokenizer.exact,
            error=fit.error if fit and tokenizer is estimate else None,
            margin=fit.margin if fit and tokenizer is estimate else 0.0,
            calibrated_turns=fit.turns if fit else 0,
            context_window=self.context_window(conversation.model),
            budget_setting=conversation.settings.context_budget,
            budget=conversation.context_budget,
        )

    def attach(self, conversation: Conversation) -> Tokenizer:
        """Install the tokenizer this backend counts `conversation` with (messages are recounted
        only when it counts differently); the tokenizer, whose `.method` the page shows."""
        model = conversation.model
        if not self.counts(model):
            base = tokenizer_for(model)
            if conversation.tokenizer != base:
                conversation.set_tokenizer(base)
            return conversation.tokenizer
        known = self._models.get(model)
        window = known.context_window if known else None
        estimate = self._estimate(conversation, window)
        tokenizer: Tokenizer = estimate
        if known is not None and known.kind is not None and not self._failing(known):
            tokenizer = self._server_tokenizer(conversation, estimate, window)
        if tokenizer != conversation.tokenizer:
            conversation.set_tokenizer(tokenizer)
        return conversation.tokenizer

    # --- network: asked once per server and model ----------------------------------------

    def discover(self, model: str) -> ServerModel | None:
        """Ask the server (once per model; again after a failure's wait) which tokenize API it
        offers, whether its framing is additive, and its context window."""
        if not self.counts(model) or self._client is None:
            return None
        known = self._models.get(model)
        if known is not None and not (known.failed_until and self._clock() >= known.failed_until):
            return known
        client = self._client
        found = ServerModel()
        for kind in client.kinds:
            try:
                alone = self._count(client, kind, model, _PROBE[:1], found)
            except TokenizeFailed as failure:
                if not failure.absent:
                    found.failed_until = self._clock() + RETRY_AFTER_S
                    log.info("Counting: %s did not answer (%s); estimating meanwhile.", client.root, failure)
                    break
                continue
            found.kind = kind
            try:
                found.additive = self._measure_additivity(client, kind, model, found, alone)
            except TokenizeFailed:
                found.additive = False  # unknown: count whole prompts, which is always right
            break
        if found.context_window is None and found.failed_until is None:
            found.context_window = self._window(client, found.kind, model)
        with self._lock:
            self._models[model] = found
        return found

    def _measure_additivity(
        self, client: TokenizeClient, kind: TokenizeKind, model: str, found: ServerModel, alone: int
    ) -> bool:
        """Given [s] counted, count [s,u,a], [s,u,a,u2] and [s,u2]: framing is additive when the
        last message adds as much after an exchange as without it (so dropping the exchange frees
        exactly what its messages added)."""
        system, user2 = _PROBE[0], _PROBE[3]
        three, four = (self._count(client, kind, model, _PROBE[:n], found) for n in (3, 4))
        without_exchange = self._count(client, kind, model, [system, user2], found)
        return without_exchange == alone + (four - three)

    def _window(self, client: TokenizeClient, kind: TokenizeKind | None, model: str) -> int | None:
        try:
            if kind == "llama.cpp":
                return client.context_window_llamacpp()
            if kind == "anthropic":
                return None  # models.yaml has Claude's windows
            return client.context_window_vllm(model)
        except TokenizeFailed:
            return None

    def _count(
        self,
        client: TokenizeClient,
        kind: TokenizeKind,
        model: str,
        messages: Sequence[Mapping[str, str]],
        known: ServerModel,
    ) -> int:
        if kind == "vllm":
            count, window = client.count_vllm(model, messages)
            if window:
                known.context_window = window
            return count
        if kind == "anthropic":
            return client.count_anthropic(model, messages)
        return client.count_llamacpp(messages)

    # --- the session's hooks ---------------------------------------------------------------

    def before_fit(self, conversation: Conversation) -> None:
        """Before a policy fits the conversation: count with the right method, and have the
        server count every in-context message it has not counted yet."""
        try:
            if not self.counts(conversation.model):
                self.attach(conversation)
                return
            self.discover(conversation.model)
            tokenizer = self.attach(conversation)
            if isinstance(tokenizer, ServerTokenizer):
                self._count_context(conversation, tokenizer, conversation.api_messages())
        except Exception:  # counting must never break a turn
            log.exception("Counting before the call failed; estimating.")
            self._fall_back(conversation)

    def after_fit(
        self, conversation: Conversation, policy: ContextPolicy, messages: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        """After the policy fitted the conversation: make sure the prompt about to be sent is
        within the budget by the server's count (when a change since `before_fit` was not
        counted exactly), trimming further if not; remember it for calibration. The messages
        to send."""
        try:
            if not self.counts(conversation.model):
                return messages
            tokenizer = conversation.tokenizer
            if isinstance(tokenizer, ServerTokenizer):
                messages = self._verify(conversation, tokenizer, policy, messages)
            self._remember(conversation, messages)
        except DashboardError:
            raise  # PromptTooLong: even the policy's best is over the budget
        except Exception:
            log.exception("Counting after the fit failed.")
        return messages

    def after_turn(self, conversation: Conversation, turn: Turn | None) -> None:
        """After a turn: fit the calibration to the usage it reported, check the server's count
        against it, and have the server count the reply."""
        try:
            pending = self._pending.pop(conversation, None)
            if turn is None or not self.counts(conversation.model):
                return
            # A prompt the server cut (it read less than it was sent) says nothing of its count.
            usable = turn.usage_source == "server" and turn.server_cut is None
            if pending is not None and turn.reported_prompt_tokens and usable:
                self._calibrate(conversation, pending, turn)
                self._check_server(conversation, turn)
            tokenizer = self.attach(conversation)
            if isinstance(tokenizer, ServerTokenizer):
                self._count_context(conversation, tokenizer, conversation.api_messages())
        except Exception:
            log.exception("Counting after the turn failed.")

    # --- internals -------------------------------------------------------------------------

    def _failing(self, known: ServerModel) -> bool:
        return known.failed_until is not None and self._clock() < known.failed_until

    def _estimate(self, conversation: Conversation, window: int | None) -> CalibratedTokenizer:
        """The calibrated estimate, kept as it is unless the calibration moved it materially."""
        current = conversation.tokenizer
        if isinstance(current, ServerTokenizer):
            current = current.fallback or current
        calibration = conversation.calibration
        fresh = calibration.tokenizer(tokenizer_for(conversation.model), context_window=window)
        if (
            isinstance(current, CalibratedTokenizer)
            and current.calibration is calibration
            and current.model == fresh.model
            and current.context_window == window
            and not self._moved(conversation, current.params, fresh.params)
        ):
            return current
        return fresh

    def _moved(self, conversation: Conversation, old: Params, new: Params) -> bool:
        if old == new:
            return False
        features = conversation.calibration.features(conversation.api_messages())
        return changed_materially(old, new, [features], tolerance=RECOUNT_TOLERANCE)

    def _server_tokenizer(
        self, conversation: Conversation, estimate: CalibratedTokenizer, window: int | None
    ) -> ServerTokenizer:
        with self._lock:
            counts = self._counts.get(conversation)
            if counts is None or counts.model != conversation.model:
                counts = self._counts[conversation] = _ServerCounts(conversation.model)
        current = conversation.tokenizer
        if (
            isinstance(current, ServerTokenizer)
            and current.counts is counts
            and current.fallback is estimate
            and current.context_window == window
        ):
            return current
        base = tokenizer_for(conversation.model)
        return ServerTokenizer(
            model=base.model,
            encoding_name=base.encoding_name,
            exact=True,
            fallback=estimate,
            context_window=window,
            counts=counts,
        )

    def _fall_back(self, conversation: Conversation) -> None:
        """The server failed to count: estimate (with the calibration's margin) for a while."""
        known = self._models.get(conversation.model)
        if known is not None and known.kind is not None:
            known.failed_until = self._clock() + RETRY_AFTER_S
        try:
            self.attach(conversation)
        except Exception:
            log.exception("Counting could not fall back to the estimate.")

    def _total(self, conversation: Conversation, messages: Sequence[Mapping[str, str]]) -> int:
        """The server's count of the prompt `messages` (remembered for the latest few)."""
        counts = self._counts[conversation]
        key = tuple(_key(m) for m in messages)
        if key in counts.totals:
            counts.totals.move_to_end(key)
            return counts.totals[key]
        known = self._models[conversation.model]
        assert self._client is not None and known.kind is not None
        counts.requests += 1
        total = self._count(self._client, known.kind, conversation.model, messages, known)
        counts.totals[key] = total
        while len(counts.totals) > _TOTALS_KEPT:
            counts.totals.popitem(last=False)
        return total

    def _count_context(
        self, conversation: Conversation, tokenizer: ServerTokenizer, messages: list[dict[str, str]]
    ) -> None:
        """Have the server count each of `messages` it has not counted yet (what it adds to the
        prompt before it), then set the offset so the prompt's count is the server's."""
        known = self._models[conversation.model]
        counts = tokenizer.counts
        keys = [_key(m) for m in messages]
        first_request = counts.requests
        newly: set[MessageKey] = set()
        try:
            for index, key in enumerate(keys):
                if key in counts.messages:
                    continue
                if counts.requests - first_request >= MAX_COUNT_REQUESTS:
                    break
                head = tuple(keys[:index])
                if not index:
                    before = 0
                elif head not in counts.totals and known.additive and all(k in counts.messages for k in head):
                    before = sum(counts.messages[k] for k in head)
                else:
                    before = self._total(conversation, messages[:index])
                counts.messages[key] = max(self._total(conversation, messages[: index + 1]) - before, 0)
                newly.add(key)
            total = self._total(conversation, messages)
        except TokenizeFailed as failure:
            log.info("Counting: the server did not count (%s); estimating.", failure)
            if failure.absent:
                known.kind = None  # it stopped offering the endpoint (for this model)
            self._fall_back(conversation)
            return
        if newly:
            conversation.recount(
                [m.id for m in conversation.iter_context() if _key(m.as_api_message()) in newly]
            )
        if (
            known.additive
            and all(key in counts.messages for key in keys)
            and total != sum(counts.messages[key] for key in keys)
        ):
            log.info("Counting: %s frames messages non-additively; counting whole prompts.", known)
            known.additive = False
        counts.offset += total - conversation.prompt_tokens

    def _verify(
        self,
        conversation: Conversation,
        tokenizer: ServerTokenizer,
        policy: ContextPolicy,
        messages: list[dict[str, str]],
    ) -> list[dict[str, str]]:
        """The prompt about to be sent, counted whole by the server unless the per-message counts
        are known to add up to it; trimmed further while it is over the budget."""
        known = self._models[conversation.model]
        counts = tokenizer.counts
        for _ in range(MAX_REFITS):
            keys = tuple(_key(m) for m in messages)
            all_counted = all(key in counts.messages for key in keys)
            known_exact = (known.additive and all_counted) or keys in counts.totals
            if known_exact and conversation.prompt_tokens <= conversation.context_budget:
                return messages
            try:
                total = self._total(conversation, messages)
            except TokenizeFailed:
                # No exact count: the estimate and its margin decide, as for a server without one.
                self._fall_back(conversation)
                return (
                    messages
                    if conversation.prompt_tokens <= conversation.context_budget
                    else (policy.fit(conversation))
                )
            counts.offset += total - conversation.prompt_tokens
            if total <= conversation.context_budget:
                return messages
            messages = policy.fit(conversation)  # trims more: the prompt now counts as it is
        pending = conversation.pending_user_message
        raise PromptTooLong(
            text=pending.content if pending else "",
            prompt_tokens=conversation.prompt_tokens,
            budget=conversation.context_budget,
            pinned_tokens=conversation.pinned_tokens,
        )

    def _remember(self, conversation: Conversation, messages: list[dict[str, str]]) -> None:
        """Keep the prompt about to be sent, to calibrate when its usage comes back."""
        calibration = conversation.calibration
        tokenizer = conversation.tokenizer
        estimate = tokenizer.fallback if isinstance(tokenizer, ServerTokenizer) else tokenizer
        features = calibration.features(messages)
        if isinstance(estimate, CalibratedTokenizer):
            params, basis = estimate.params, estimate.fit.turns
            predicted = (
                conversation.prompt_tokens if estimate is tokenizer else round(params.prompt(features))
            )
        else:
            current = calibration.fit(conversation.model)
            params, basis = current.params, current.turns
            predicted = round(params.prompt(features))
        self._pending[conversation] = _Pending(
            conversation.model, tuple(_key(m) for m in messages), features, max(predicted, 0), basis
        )

    def _calibrate(self, conversation: Conversation, pending: _Pending, turn: Turn) -> None:
        if pending.model != conversation.model or not turn.reported_prompt_tokens:
            return
        reply = conversation.message(turn.reply_id).content if turn.reply_id else None
        conversation.calibration.observe(
            pending.model,
            pending.features,
            reported=turn.reported_prompt_tokens,
            predicted=pending.predicted,
            basis=pending.basis,
            reply=reply if turn.finish_reason == "stop" and not turn.interrupted else None,
            reported_reply=turn.reported_completion_tokens,
        )

    def _check_server(self, conversation: Conversation, turn: Turn) -> None:
        """A server count that differs from the usage the server reported is not exact: count
        whole prompts from now on; if that still differs, stop trusting the endpoint."""
        known = self._models.get(conversation.model)
        if known is None or known.kind is None or not turn.count_exact:
            return
        if turn.reported_prompt_tokens == turn.counted_prompt_tokens:
            return
        known.disagreements += 1
        if known.additive:
            known.additive = False
        elif known.disagreements >= 2:
            log.info("Counting: %s counts differently from what it bills; calibrating.", known)
            known.kind = None


# --- one per backend -----------------------------------------------------------------------

_countings: weakref.WeakKeyDictionary[ChatBackend, Counting] = weakref.WeakKeyDictionary()
_countings_lock = threading.Lock()


def counting_for(backend: ChatBackend) -> Counting:
    """The `Counting` of `backend`: what was learned about its server lasts as long as it does.
    A backend counted locally (the offline model) counts with tiktoken."""
    if backend.capabilities.counting != "server":
        return _TIKTOKEN_ONLY
    with _countings_lock:
        counting = _countings.get(backend)
        if counting is None:
            counting = _countings[backend] = Counting(backend)
        return counting


_TIKTOKEN_ONLY = Counting(None)
