"""What a deployer lets visitors spend with the deployer's key: which models, how large a reply cap
and context budget, how long a message, and how many requests and tokens a visitor's workspace and
the whole deployment may use.

    limits = DeployerLimits.from_settings(st.secrets, os.environ)   # ConfigError on a bad value
    settings, notes = limits.enforce(session.settings)               # clamp a persona's settings
    RATE_LIMITS.admit(limits, owner, tokens=prompt_tokens + settings.max_reply_tokens)
                                            # RateLimitedLocally when the owner or the deployment is over

Every setting is optional; unset means no limit beyond the app's own (`core.chat.settings`).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.chat.settings import MAX_CONTEXT_BUDGET, MAX_REPLY_CAP, ChatSettings
from core.errors import ConfigError, RateLimitedLocally
from core.notices import Notice
from core.validation import field_limits

#: The longest chat message a visitor may send by default (`chat_input(max_chars=...)`).
DEFAULT_MAX_MESSAGE_CHARS = 20_000
_MAX_RATE = 1_000_000_000
_WHOLE_NUMBER = re.compile(r"\d{1,12}")


class DeployerLimits(BaseModel):
    """The deployer's limits, read once from Streamlit secrets or the environment (secrets win).

    | Setting | Field |
    |---|---|
    | `ALLOWED_MODELS` (comma/newline separated, or a TOML list in secrets) | `allowed_models` (empty: any) |
    | `MAX_REPLY_CAP` | `max_reply_cap` |
    | `MAX_CONTEXT_BUDGET` | `max_context_budget` |
    | `MAX_MESSAGE_CHARS` | `max_message_chars` |
    | `RATE_LIMIT_REQUESTS_PER_MIN` | `requests_per_min` (None: no limit) |
    | `RATE_LIMIT_TOKENS_PER_MIN` | `tokens_per_min` (None: no limit) |
    | `RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN` | `deployment_requests_per_min` (every visitor together) |
    | `RATE_LIMIT_TOKENS_PER_DAY` | `tokens_per_day` (every visitor together, a sliding 24 hours) |

    The per-minute rates hold per workspace (owner), not per browser session: every tab and
    session of one visitor shares them (`RateLimits`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_models: tuple[str, ...] = ()
    max_reply_cap: int = Field(MAX_REPLY_CAP, ge=1, le=MAX_REPLY_CAP)
    max_context_budget: int = Field(MAX_CONTEXT_BUDGET, ge=1, le=MAX_CONTEXT_BUDGET)
    max_message_chars: int = Field(DEFAULT_MAX_MESSAGE_CHARS, ge=1, le=1_000_000)
    requests_per_min: int | None = Field(None, ge=1, le=_MAX_RATE)
    tokens_per_min: int | None = Field(None, ge=1, le=_MAX_RATE)
    deployment_requests_per_min: int | None = Field(None, ge=1, le=_MAX_RATE)
    tokens_per_day: int | None = Field(None, ge=1, le=_MAX_RATE * 1000)

    #: Field name -> the setting the deployer writes.
    SETTINGS: ClassVar[dict[str, str]] = {
        "allowed_models": "ALLOWED_MODELS",
        "max_reply_cap": "MAX_REPLY_CAP",
        "max_context_budget": "MAX_CONTEXT_BUDGET",
        "max_message_chars": "MAX_MESSAGE_CHARS",
        "requests_per_min": "RATE_LIMIT_REQUESTS_PER_MIN",
        "tokens_per_min": "RATE_LIMIT_TOKENS_PER_MIN",
        "deployment_requests_per_min": "RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN",
        "tokens_per_day": "RATE_LIMIT_TOKENS_PER_DAY",
    }

    @classmethod
    def from_settings(cls, secrets: Mapping[str, object], environ: Mapping[str, str]) -> DeployerLimits:
        """The limits as configured; a malformed value is a `ConfigError` naming its setting."""
        values: dict[str, Any] = {}
        for field_name, setting in cls.SETTINGS.items():
            raw = secrets.get(setting)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                raw = environ.get(setting, "")
            if field_name == "allowed_models":
                models = _models(setting, raw)
                if models:
                    values[field_name] = models
            elif raw != "":
                values[field_name] = _whole_number(setting, raw)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field_name = str(error["loc"][0])
            setting = cls.SETTINGS.get(field_name, field_name)
            low, high = field_limits(cls, field_name)
            raise ConfigError(
                setting, f"The setting {setting} is not valid: {error['msg']} (got {values.get(field_name)})."
            ).coded(
                "config_range", setting=setting, value=values.get(field_name), low=low, high=high
            ) from None

    def model_allowed(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    def enforce(self, settings: ChatSettings) -> tuple[ChatSettings, list[Notice]]:
        """`settings` within these limits, and a notice per change made (for the visitor:
        `notice.limit_<what>`)."""
        changes: dict[str, Any] = {}
        notes: list[Notice] = []
        if not self.model_allowed(settings.model):
            changes["model"] = self.allowed_models[0]
            notes.append(
                Notice(code="limit_model", fields={"model": settings.model, "used": self.allowed_models[0]})
            )
        if settings.summarizer_model is not None and not self.model_allowed(settings.summarizer_model):
            # The summary is then written by the conversation's own (allowed) model.
            changes["summarizer_model"] = None
            notes.append(Notice(code="limit_summarizer", fields={"model": settings.summarizer_model}))
        if settings.max_reply_tokens > self.max_reply_cap:
            changes["max_reply_tokens"] = self.max_reply_cap
            notes.append(Notice(code="limit_reply_cap", fields={"limit": self.max_reply_cap}))
        if settings.context_budget > self.max_context_budget:
            changes["context_budget"] = self.max_context_budget
            notes.append(Notice(code="limit_context_budget", fields={"limit": self.max_context_budget}))
        if not changes:
            return settings, notes
        return ChatSettings.model_validate({**settings.model_dump(), **changes}), notes

    def rate_limiter(self, *, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        """A new limiter with the per-minute rates of one workspace."""
        return RateLimiter(
            requests_per_min=self.requests_per_min, tokens_per_min=self.tokens_per_min, clock=clock
        )

    def deployment_limiters(self, *, clock: Callable[[], float] = time.monotonic) -> tuple[RateLimiter, ...]:
        """New limiters for every visitor together: requests a minute, tokens a day."""
        return (
            RateLimiter(
                requests_per_min=self.deployment_requests_per_min,
                clock=clock,
                scope="This deployment",
                request_setting="RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN",
            ),
            RateLimiter(
                tokens_per_min=self.tokens_per_day,
                window_s=DAY_S,
                clock=clock,
                scope="This deployment",
                token_setting="RATE_LIMIT_TOKENS_PER_DAY",
            ),
        )

    @property
    def rated(self) -> bool:
        """True when any rate is limited."""
        rates = (
            self.requests_per_min,
            self.tokens_per_min,
            self.deployment_requests_per_min,
            self.tokens_per_day,
        )
        return any(rate is not None for rate in rates)


DAY_S = 86_400.0


class RateLimits:
    """The process's rate limiters: one per owner (every browser session of a visitor shares it)
    and one set for the whole deployment, per configuration of limits. Thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._owners: dict[tuple[DeployerLimits, str], RateLimiter] = {}
        self._deployment: dict[DeployerLimits, tuple[RateLimiter, ...]] = {}

    def limiters(self, limits: DeployerLimits, owner: str) -> tuple[RateLimiter, ...]:
        with self._lock:
            own = self._owners.get((limits, owner))
            if own is None:
                own = self._owners[(limits, owner)] = limits.rate_limiter(clock=self._clock)
            shared = self._deployment.get(limits)
            if shared is None:
                shared = self._deployment[limits] = limits.deployment_limiters(clock=self._clock)
            return (own, *shared)

    def admit(self, limits: DeployerLimits, owner: str, *, tokens: int = 0, requests: int = 1) -> None:
        """Admit `requests` requests expected to use `tokens` tokens in all, counted against the
        owner's and the deployment's limits, or raise `RateLimitedLocally` (nothing counted)."""
        limiters = self.limiters(limits, owner)
        with self._lock:  # all or nothing: no limiter counts a request another refuses
            for limiter in limiters:
                limiter.check(tokens, requests=requests, dry_run=True)
            for limiter in limiters:
                limiter.check(tokens, requests=requests)

    def clear(self) -> None:
        """Forget every count (tests: each starts with a fresh deployment)."""
        with self._lock:
            self._owners.clear()
            self._deployment.clear()


#: The process's limiters, shared by every visitor.
RATE_LIMITS = RateLimits()


#: A refused request's error code (`error.<code>`) by the setting that refused it: one that must wait...
_WAIT_CODES = {
    "RATE_LIMIT_REQUESTS_PER_MIN": "local_requests_wait",
    "RATE_LIMIT_TOKENS_PER_MIN": "local_tokens_wait",
    "RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN": "deployment_requests_wait",
    "RATE_LIMIT_TOKENS_PER_DAY": "deployment_tokens_wait",
}
#: ...and one larger than the whole limit, which never fits.
_TOO_LARGE_CODES = {
    "RATE_LIMIT_TOKENS_PER_MIN": "local_tokens_too_many",
    "RATE_LIMIT_TOKENS_PER_DAY": "deployment_tokens_too_many",
}


def _whole_number(setting: str, raw: object) -> int:
    text = str(raw).strip()
    if isinstance(raw, bool) or not _WHOLE_NUMBER.fullmatch(text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ConfigError(
            setting, f"The setting {setting} must be a whole number of at least 1, not {shown!r}."
        ).coded("config_whole_positive", setting=setting, value=shown)
    return int(text)


def _models(setting: str, raw: object) -> tuple[str, ...]:
    items = [str(item) for item in raw] if isinstance(raw, list | tuple) else re.split(r"[,\n]", str(raw))
    models: list[str] = []
    for item in items:
        name = item.strip()
        if not name:
            continue
        if len(name) > 200 or any(ch.isspace() for ch in name):
            raise ConfigError(setting, f"{setting}: {name[:60]!r} is not a model name.").coded(
                "config_model_name", setting=setting, value=name[:60]
            )
        if name not in models:
            models.append(name)
    return tuple(models)


class RateLimiter:
    """A sliding-window limit on requests and tokens (a minute unless told; thread-safe).

    `check(tokens)` admits one request expected to use `tokens` tokens (counted from then on) or
    raises `RateLimitedLocally` with `retry_after`, the seconds until it would be admitted.
    `add_tokens(n)` counts tokens learned of later (e.g. the reply's, beyond the estimate).
    `requests_per_min` and `tokens_per_min` are the most per window.
    """

    def __init__(
        self,
        *,
        requests_per_min: int | None = None,
        tokens_per_min: int | None = None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        scope: str = "This session",
        request_setting: str = "RATE_LIMIT_REQUESTS_PER_MIN",
        token_setting: str = "RATE_LIMIT_TOKENS_PER_MIN",
    ) -> None:
        self.requests_per_min = requests_per_min
        self.tokens_per_min = tokens_per_min
        self.window_s = window_s
        self.scope = scope
        self.request_setting = request_setting
        self.token_setting = token_setting
        self._window_name = "day" if window_s == DAY_S else "minute"
        self._clock = clock
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self._lock = threading.Lock()

    def check(self, tokens: int = 0, *, requests: int = 1, dry_run: bool = False) -> None:
        """Admit `requests` requests using `tokens` tokens in all (`dry_run`: only say whether)."""
        tokens = max(int(tokens), 0)
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.tokens_per_min is not None and tokens > self.tokens_per_min:
                raise RateLimitedLocally(
                    f"This request needs about {tokens:,} tokens, more than the {self.tokens_per_min:,} "
                    f"tokens a {self._window_name} this deployment allows. "
                    "Lower the reply cap or the context budget.",
                    retry_after=None,
                    limit=self.token_setting,
                ).coded(_TOO_LARGE_CODES[self.token_setting], tokens=tokens, limit=self.tokens_per_min)
            wait = self._wait(now, tokens, requests)
            if wait is not None:
                seconds, limit, used = wait
                what = f"{used:,} {'requests' if limit == self.request_setting else 'tokens'}"
                shown = max(math.ceil(seconds), 1)
                raise RateLimitedLocally(
                    f"{self.scope} has used {what} in the last {self._window_name}, the most this "
                    f"deployment allows. Try again in {shown} s.",
                    retry_after=seconds,
                    limit=limit,
                ).coded(_WAIT_CODES[limit], used=used, seconds=shown)
            if dry_run:
                return
            self._requests.extend([now] * requests)
            if tokens:
                self._tokens.append((now, tokens))
                self._token_sum += tokens

    def add_tokens(self, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._lock:
            self._tokens.append((self._clock(), tokens))
            self._token_sum += tokens

    def retry_after(self, tokens: int = 0) -> float:
        """Seconds until `check(tokens)` would pass (0 when it would now)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            wait = self._wait(now, max(int(tokens), 0), 1)
            return 0.0 if wait is None else wait[0]

    def _expire(self, now: float) -> None:
        start = now - self.window_s
        while self._requests and self._requests[0] <= start:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= start:
            self._token_sum -= self._tokens.popleft()[1]

    def _wait(self, now: float, tokens: int, requests: int) -> tuple[float, str, int] | None:
        """(seconds, setting, how many requests or tokens were used) for the limit that blocks
        `requests` now, or None."""
        waits: list[tuple[float, str, int]] = []
        limit = self.requests_per_min
        if limit is not None and len(self._requests) + requests > limit:
            # The requests fit once enough of the oldest ones have left the window (never, when
            # more are asked for at once than the limit: the wait is then a whole window).
            leave = len(self._requests) + requests - limit
            oldest_to_leave = self._requests[leave - 1] if leave <= len(self._requests) else now
            waits.append(
                (
                    oldest_to_leave + self.window_s - now,
                    self.request_setting,
                    len(self._requests),
                )
            )
        if self.tokens_per_min is not None and self._token_sum + tokens > self.tokens_per_min:
            excess = self._token_sum + tokens - self.tokens_per_min
            for when, used in self._tokens:
                excess -= used
                if excess <= 0:
                    waits.append(
                        (
                            when + self.window_s - now,
                            self.token_setting,
                            self._token_sum,
                        )
                    )
                    break
        return max(waits) if waits else None
