"""What every persona import shares: the report, the builder that maps another tool's fields onto
a `Persona` and says what it did, and bounded readers for the JSON and YAML those tools write.

A format module (`core.personas.character_cards`, `core.personas.agent_formats`) reads its file,
hands each value to a `PersonaBuilder` with the name the source gave it, and asks for the persona:
the builder cuts or drops what a persona cannot hold (with the reason), fills what the source lacks,
validates the result exactly as a persona file is validated (the YAML it would save is parsed back),
and counts the system message against the context budget."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from core.chat.settings import POLICY_NAMES, Sampling
from core.counting.tokens import tokenizer_for
from core.errors import PersonaFileError, Problem, problem_english
from core.i18n import english
from core.notices import Notice, json_problem
from core.personas.avatars import AvatarImageError, avatar_from_data_url, avatar_png, encode_avatar
from core.personas.persona import (
    DEFAULT_MODEL,
    MAX_EXAMPLES,
    Persona,
    PersonaFile,
    _emoji,
    parse_persona,
    persona_yaml,
    system_message,
)
from core.validation import describe_value, field_limits, problem_notices

__all__ = [
    "DEFAULT_IMPORT_BUDGET",
    "DEFAULT_IMPORT_REPLY_CAP",
    "DEFAULT_USER_NAME",
    "MAX_IMPORT_BYTES",
    "Dropped",
    "ImportProblem",
    "ImportReport",
    "ImportedPersona",
    "Mapped",
    "PersonaBuilder",
    "dashboard_block",
    "kept_fields",
    "measure",
    "not_utf8",
    "persona_id_from",
    "read_json",
    "shown_value",
]

#: The largest file an import reads (a character card PNG with a large picture is a few MiB).
MAX_IMPORT_BYTES: Final = 8 * 1024 * 1024
#: JSON text (a card's JSON, the base64 inside a PNG once decoded, an agent file).
MAX_JSON_BYTES: Final = 4 * 1024 * 1024
MAX_JSON_DEPTH: Final = 64
MAX_JSON_CONTAINERS: Final = 100_000
DEFAULT_IMPORT_BUDGET: Final = 8_192
DEFAULT_IMPORT_REPLY_CAP: Final = 1_024
DEFAULT_USER_NAME: Final = "User"
#: Over this share of the context budget the system message leaves little room for the chat
#: (SillyTavern warns at the same point).
BUDGET_WARNING_SHARE: Final = 0.5
_LIMITS = {"name": 60, "description": 200, "greeting": 2_000, "system_prompt": 20_000}
_RANGES = {"context_budget": (64, 2_000_000), "max_reply_tokens": (1, 200_000)}
_REQUIRED = {"name", "avatar", "description", "system_prompt", "context_budget", "max_reply_tokens"}


class ImportProblem(Exception):
    """Internal: this file (or this persona in it) cannot be imported, for the reasons given."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__(*problems)
        self.problems = problems


@dataclass(frozen=True)
class Mapped:
    """A persona field filled from the source: `ours` from `theirs` (with a note when changed)."""

    ours: str
    theirs: str
    note: Notice | None = None


@dataclass(frozen=True)
class Dropped:
    """A source field not used, and why (kept ones are named in `reason`)."""

    theirs: str
    reason: Notice


@dataclass
class ImportReport:
    """What one import did: the source format, what was mapped, dropped and filled in, warnings,
    and the system message's tokens against the persona's context budget. Its words are notices
    (`notice.import_<…>` with their fields) the page shows in its language."""

    file_name: str
    source_format: Notice
    mapped: list[Mapped] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    system_tokens: int = 0
    context_budget: int = 0

    @property
    def budget_share(self) -> float:
        """The system message's share of the context budget (0 before the persona is built)."""
        return self.system_tokens / self.context_budget if self.context_budget else 0.0

    @property
    def budget_warning(self) -> bool:
        return self.budget_share > BUDGET_WARNING_SHARE

    def lines(self) -> list[str]:
        """The report as text lines (the command line prints them)."""
        lines = [f"format: {english(self.source_format)}"]
        for item in self.mapped:
            lines.append(
                f"  mapped   {item.ours} <- {item.theirs}" + (f" ({english(item.note)})" if item.note else "")
            )
        for drop in self.dropped:
            lines.append(f"  dropped  {drop.theirs}: {english(drop.reason)}")
        lines.append(
            f"  tokens   system message {self.system_tokens:,} of a {self.context_budget:,}-token budget "
            f"({self.budget_share:.0%})"
        )
        lines.extend(f"  warning  {english(warning)}" for warning in self.warnings)
        return lines


@dataclass(frozen=True)
class ImportedPersona:
    """One persona an import made, with its report."""

    persona: Persona
    report: ImportReport


def read_json(data: bytes, what: Notice | None = None) -> Any:
    """JSON from bytes, bounded: size, depth and container count are capped, so a file nested or
    sized to exhaust memory or the stack fails with a sentence instead. `what` names the JSON
    (e.g. a PNG chunk); the file itself by default."""
    what = what or Notice(code="import_what_file")
    if len(data) > MAX_JSON_BYTES:
        raise ImportProblem(
            Notice(
                code="import_json_too_large",
                fields={"what": what, "size": _size(len(data)), "limit": _size(MAX_JSON_BYTES)},
            )
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportProblem(not_utf8(data, exc, what)) from None
    # Counted before parsing: every container costs memory, and the text bounds how many can exist.
    containers = text.count("{") + text.count("[")
    if containers > MAX_JSON_CONTAINERS:
        raise ImportProblem(
            Notice(
                code="import_json_containers",
                fields={"what": what, "count": containers, "limit": MAX_JSON_CONTAINERS},
            )
        )
    try:
        value = json.loads(text)
    except RecursionError:
        raise ImportProblem(_too_deep(what)) from None
    except json.JSONDecodeError as exc:
        raise ImportProblem(
            Notice(
                code="import_json_invalid_at",
                fields={"what": what, "problem": json_problem(exc), "line": exc.lineno, "column": exc.colno},
            )
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ImportProblem(
            Notice(code="import_json_invalid", fields={"what": what, "problem": str(exc)})
        ) from None
    _check_depth(value, what)
    return value


def not_utf8(data: bytes, exc: UnicodeDecodeError, what: Notice) -> Notice:
    """`what` (the file, a chunk) is not UTF-8 text: where, and the byte found there."""
    return Notice(
        code="import_not_utf8", fields={"what": what, "byte": f"0x{data[exc.start]:02x}", "offset": exc.start}
    )


def _too_deep(what: Notice) -> Notice:
    return Notice(code="import_json_too_deep", fields={"what": what, "limit": MAX_JSON_DEPTH})


def _check_depth(value: Any, what: Notice) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ImportProblem(_too_deep(what))
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


def kept_fields(source: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    """`source` without the `used` dotted paths and without empty values: what an import keeps
    under `extensions` so that an export to the same format gives it back."""
    used_paths = {tuple(path.split(".")) for path in used}

    def keep(value: Any, prefix: tuple[str, ...]) -> Any:
        if prefix in used_paths:
            return None
        if isinstance(value, dict):
            kept = {str(k): keep(v, (*prefix, str(k))) for k, v in value.items()}
            return {k: v for k, v in kept.items() if v is not None} or None
        if value in ("", [], {}, None):
            return None
        return value

    kept = keep(source, ())
    return kept if isinstance(kept, dict) else {}


def persona_id_from(*candidates: str | None) -> str:
    """A persona id (letters, digits, '_', '-', '.') from the first candidate that gives one."""
    for candidate in candidates:
        if not candidate:
            continue
        slug = re.sub(r"[^\w.-]+", "-", candidate.strip().lower()).strip("-._")[:64].strip("-._")
        if slug:
            return slug
    return "persona"


def dashboard_block(persona: Persona, *, keys: Iterable[str], skip: str) -> dict[str, Any]:
    """The persona's settings that another format has no place for (`keys`), for an export to
    carry; `extensions` holds the other formats' kept fields (all but `skip`, the format's own)."""
    values: dict[str, Any] = {
        "id": persona.id,
        "avatar": persona.avatar,
        "model": persona.model,
        "sampling": persona.sampling.model_dump(exclude_none=True),
        "context_budget": persona.context_budget,
        "max_reply_tokens": persona.max_reply_tokens,
        "context_policy": persona.context_policy,
        "summarizer_model": persona.summarizer_model,
        "starter_prompts": list(persona.starter_prompts),
        "has_avatar_image": persona.avatar_image is not None,
        "extensions": {k: v for k, v in persona.extensions.items() if k != skip},
    }
    return {key: values[key] for key in keys if values[key] not in (None, {}, [])}


def shown_value(value: Any) -> str | Notice:
    """A value as a report shows it: its repr cut short, or its kind (a list, a mapping, nothing)
    in the page's language."""
    if value is None:
        return Notice(code="import_value_null")
    if isinstance(value, dict):
        return Notice(code="import_value_mapping")
    if isinstance(value, list | tuple | set | frozenset):
        return Notice(code="import_value_list")
    return describe_value(value)


def _out_of_range(field_name: str, value: Any, low: float | None, high: float | None) -> Notice:
    return Notice(
        code="import_drop_out_of_range",
        fields={"value": shown_value(value), "field": field_name, "low": low, "high": high},
    )


def substitute_macros(text: str, char: str, user: str) -> str:
    """`{{char}}`/`<BOT>` and `{{user}}`/`<USER>` (any case) replaced by the names, as the tools that
    write them do before sending; `{{original}}` (SillyTavern: "the prompt this replaces") removed."""
    text = re.sub(r"\{\{\s*char\s*\}\}|<bot>", lambda _: char, text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{\s*user\s*\}\}|<user>", lambda _: user, text, flags=re.IGNORECASE)
    return re.sub(r"\{\{\s*original\s*\}\}", "", text, flags=re.IGNORECASE)


def measure(report: ImportReport, persona: Persona) -> None:
    """Count the persona's system message against its budget into `report` (warning above half)."""
    message = {"role": "system", "content": system_message(persona)}
    tokens = tokenizer_for(persona.model).count_message(message)
    report.system_tokens, report.context_budget = tokens, persona.context_budget
    if report.budget_warning:
        report.warnings.append(
            Notice(
                code="import_warn_budget",
                fields={"tokens": tokens, "budget": persona.context_budget, "share": report.budget_share},
            )
        )


class PersonaBuilder:
    """Collects a persona's fields from a source, recording each mapping and each drop."""

    def __init__(self, file_name: str, source_format: Notice, *, user_name: str = DEFAULT_USER_NAME) -> None:
        self.file_name = file_name
        self.user_name = user_name or DEFAULT_USER_NAME
        self.report = ImportReport(file_name=file_name, source_format=source_format)
        self.fields: dict[str, Any] = {}
        self.sampling: dict[str, Any] = {}
        self.extensions: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        #: The source's field paths this import has read (mapped, dropped or judged empty): what
        #: `keep_unread` leaves out of `extensions`.
        self._read: set[str] = set()
        #: The id the source asks for (this app's own export says which), else None.
        self.suggested_id: str | None = None

    # --- recording ---------------------------------------------------------------------------

    def read(self, *theirs: str) -> None:
        """Source fields read outside the builder (an id, a version number), not to be kept."""
        self._read.update(theirs)

    def drop(self, theirs: str, reason: Notice) -> None:
        self.report.dropped.append(Dropped(theirs, reason))

    def warn(self, warning: Notice) -> None:
        self.report.warnings.append(warning)

    def _map(self, ours: str, theirs: str, value: Any, note: Notice | None = None) -> None:
        self.fields[ours] = value
        self._sources[ours] = theirs
        self.report.mapped = [m for m in self.report.mapped if m.ours != ours]
        self.report.mapped.append(Mapped(ours, theirs, note))

    # --- fields ------------------------------------------------------------------------------

    def text(self, ours: str, theirs: str, value: Any) -> None:
        """A text field; a one-line field takes the first line, a long one is cut (and reported)."""
        self._read.add(theirs)
        if value is None or value == "":
            return
        if not isinstance(value, str):
            self.drop(theirs, Notice(code="import_drop_not_text", fields={"value": shown_value(value)}))
            return
        text = value.strip()
        if not text:
            return
        joined = ours in {"name", "description"} and ("\n" in text or "\r" in text)
        if joined:
            text = " ".join(text.split())
        limit, note = _LIMITS[ours], Notice(code="import_note_joined") if joined else None
        if len(text) > limit:
            if ours == "system_prompt":
                raise ImportProblem(
                    Notice(
                        code="import_prompt_too_long",
                        fields={"length": len(text), "theirs": theirs, "limit": limit},
                    )
                )
            text = text[: limit - 1].rstrip() + "…"
            cut = {"limit": limit}
            note = (
                Notice(code="import_note_joined_cut", fields=cut)
                if joined
                else Notice(code="import_note_cut", fields=cut)
            )
        self._map(ours, theirs, text, note)

    def emoji(self, theirs: str, value: Any) -> bool:
        """The avatar emoji when `value` is one; False (nothing recorded) otherwise."""
        self._read.add(theirs)
        if not isinstance(value, str) or not value.strip() or len(value.strip()) > 8:
            return False
        try:
            self._map("avatar", theirs, _emoji(value.strip()))
        except ValueError:
            return False
        return True

    def image(self, theirs: str, data: bytes) -> None:
        """An avatar picture from bytes (normalised to a small PNG); a bad one is dropped."""
        self._read.add(theirs)
        try:
            self._map("avatar_image", theirs, encode_avatar(avatar_png(data)))
        except AvatarImageError as exc:
            self.drop(theirs, Notice(code="import_drop_picture", fields={"problem": exc.reason}))

    def image_url(self, theirs: str, url: Any) -> None:
        """An avatar from a URL: a data: URL is decoded here; any other URL is never fetched."""
        self._read.add(theirs)
        if not isinstance(url, str) or not url.strip():
            return
        if url.strip().lower().startswith("data:"):
            try:
                self._map("avatar_image", theirs, encode_avatar(avatar_from_data_url(url.strip())))
            except AvatarImageError as exc:
                self.drop(theirs, Notice(code="import_drop_picture", fields={"problem": exc.reason}))
            return
        shown = url if len(url) <= 80 else url[:79] + "…"
        self.drop(theirs, Notice(code="import_drop_picture_link", fields={"url": shown}))

    def integer(self, ours: str, theirs: str, value: Any) -> None:
        """A whole-number field within the persona's limits; anything else is dropped with why."""
        self._read.add(theirs)
        if value is None:
            return
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.drop(theirs, Notice(code="import_drop_not_whole", fields={"value": shown_value(value)}))
            return
        low, high = _RANGES[ours]
        if not low <= value <= high:
            self.drop(theirs, _out_of_range(ours, value, low, high))
            return
        self._map(ours, theirs, value)

    def sample(self, key: str, theirs: str, value: Any) -> None:
        """One sampling option, checked alone so a bad one costs only itself."""
        self._read.add(theirs)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.drop(theirs, Notice(code="import_drop_not_number", fields={"value": shown_value(value)}))
            return
        try:
            Sampling.model_validate({key: value}, strict=False)
        except ValidationError:
            self.drop(theirs, _out_of_range(key, value, *field_limits(Sampling, key)))
            return
        self.sampling[key] = int(value) if key == "seed" else float(value)
        self.report.mapped.append(Mapped(f"sampling.{key}", theirs))

    def model(self, theirs: str, value: Any) -> None:
        self._read.add(theirs)
        if isinstance(value, str) and value.strip() and len(value.strip()) <= 200:
            self._map("model", theirs, value.strip())
        elif value not in (None, ""):
            self.drop(theirs, Notice(code="import_drop_not_model", fields={"value": shown_value(value)}))

    def text_list(self, ours: str, theirs: str, values: Any, *, most: int | None = None) -> None:
        """A list of short texts (tags, starter prompts): the items a persona can hold, the rest
        dropped with why."""
        self._read.add(theirs)
        if values in (None, []):
            return
        if not isinstance(values, list):
            self.drop(theirs, Notice(code="import_drop_not_list", fields={"value": shown_value(values)}))
            return
        limit = 40 if ours == "tags" else 300
        kept: list[str] = []
        for index, item in enumerate(values):
            text = item.strip() if isinstance(item, str) else ""
            if not text or len(text) > limit or (ours == "tags" and "\n" in text):
                self.drop(
                    f"{theirs}[{index}]",
                    Notice(
                        code="import_drop_not_one_line", fields={"value": shown_value(item), "limit": limit}
                    ),
                )
            elif most is not None and len(kept) >= most:
                self.drop(f"{theirs}[{index}]", Notice(code="import_drop_too_many", fields={"limit": most}))
            elif text not in kept:
                kept.append(text)
        if kept:
            self._map(ours, theirs, kept)

    def examples(self, theirs: str, messages: list[tuple[str, str]]) -> None:
        """Few-shot examples as (role, text) pairs: "user" or "assistant" roles, non-empty text."""
        self._read.add(theirs)
        kept = [{"role": role, "content": text.strip()} for role, text in messages if text.strip()]
        for index, message in enumerate(kept):
            if len(message["content"]) > 4_000:
                message["content"] = message["content"][:3_999].rstrip() + "…"
                self.warn(
                    Notice(code="import_warn_example_cut", fields={"number": index + 1, "limit": 4_000})
                )
        if len(kept) > MAX_EXAMPLES:
            self.drop(
                theirs,
                Notice(
                    code="import_drop_examples",
                    fields={"count": len(kept) - MAX_EXAMPLES, "limit": MAX_EXAMPLES},
                ),
            )
            kept = kept[:MAX_EXAMPLES]
        if kept:
            self._map(
                "examples", theirs, kept, Notice(code="import_note_messages", fields={"count": len(kept)})
            )

    def keep(
        self, format_key: str, kept: dict[str, Any], *, reasons: dict[str, Notice] | None = None
    ) -> None:
        """Fields with no place in a persona, kept under `extensions[format_key]` (each reported,
        with its own reason where `reasons` has one)."""
        if not kept:
            return
        self.extensions[format_key] = kept
        for name, value in kept.items():
            inner = list(value) if isinstance(value, dict) and value and name == "extensions" else [None]
            for key in inner:
                path = name if key is None else f"{name}.{key}"
                self.drop(path, (reasons or {}).get(path, Notice(code="import_drop_kept")))

    def keep_unread(
        self, format_key: str, source: dict[str, Any], *, reasons: dict[str, Notice] | None = None
    ) -> None:
        """`keep` every field of `source` this import did not read."""
        self.keep(format_key, kept_fields(source, self._read), reasons=reasons)

    def settings_block(self, theirs: str, block: dict[str, Any]) -> None:
        """The persona's own settings as `dashboard_block` wrote them into another format."""
        self._read.add(theirs)
        for key, value in block.items():
            where = f"{theirs}.{key}"
            if key == "avatar":
                if not self.emoji(where, value):
                    self.drop(
                        where, Notice(code="import_drop_not_emoji", fields={"value": shown_value(value)})
                    )
            elif key == "model":
                self.model(where, value)
            elif key == "sampling" and isinstance(value, dict):
                for option, number in value.items():
                    if option in Sampling.model_fields:
                        self.sample(option, f"{where}.{option}", number)
                    else:
                        self.drop(f"{where}.{option}", Notice(code="import_drop_not_sampling"))
            elif key in _RANGES:
                self.integer(key, where, value)
            elif key == "context_policy" and value in POLICY_NAMES:
                self._map(key, where, value)
            elif key == "summarizer_model" and isinstance(value, str) and 0 < len(value.strip()) <= 200:
                self._map(key, where, value.strip())
            elif key == "starter_prompts":
                self.text_list(key, where, value, most=6)
            elif key == "extensions" and isinstance(value, dict):
                self.extensions.update({str(k): v for k, v in value.items() if isinstance(v, dict)})
            elif key == "id" and isinstance(value, str):
                self.suggested_id = value
            elif key != "has_avatar_image":
                self.drop(
                    where, Notice(code="import_drop_unknown_setting", fields={"value": shown_value(value)})
                )

    # --- the persona -------------------------------------------------------------------------

    def build(self, persona_id: str, *, default_avatar: str = "🤖") -> ImportedPersona:
        """The persona, validated as a persona file is (its YAML parsed back); raises `ImportProblem`."""
        fields = dict(self.fields)
        if "name" not in fields:
            raise ImportProblem(Notice(code="import_no_name"))
        name = fields["name"]
        if "avatar" not in fields:
            fields["avatar"] = default_avatar
        if "description" not in fields:
            fields["description"] = f"Imported from {english(self.report.source_format)}."
            self.report.mapped.append(Mapped("description", "", Notice(code="import_note_filled_in")))
        if "system_prompt" not in fields:
            fields["system_prompt"] = f"You are {name}."
            self.warn(Notice(code="import_warn_no_system_prompt", fields={"prompt": fields["system_prompt"]}))
        if self.sampling:
            fields["sampling"] = dict(self.sampling)
        fields.setdefault("context_budget", DEFAULT_IMPORT_BUDGET)
        fields.setdefault("max_reply_tokens", DEFAULT_IMPORT_REPLY_CAP)
        fields.setdefault("model", DEFAULT_MODEL)
        if self.extensions:
            fields["extensions"] = dict(self.extensions)
        persona = self._validated(fields, persona_id)
        measure(self.report, persona)
        return ImportedPersona(persona, self.report)

    def _validated(self, fields: dict[str, Any], persona_id: str) -> Persona:
        """Validate; an optional field that fails is dropped (with the reason) and the rest tried
        again; kept extensions too large for a persona file are let go largest first."""
        for _ in range(len(PersonaFile.model_fields) + 16):
            try:
                persona = Persona.model_validate({**fields, "id": persona_id})
                return parse_persona(persona_yaml(persona), persona_id)
            except ValidationError as exc:
                failed: dict[str, Notice] = {}
                for error, problem in zip(
                    exc.errors(include_url=False),
                    problem_notices(exc, model=Persona, max_shown=10_000),
                    strict=True,
                ):
                    failed.setdefault(str(error["loc"][0]) if error["loc"] else "", problem)
                if set(failed) & _REQUIRED or "" in failed:
                    raise ImportProblem(*failed.values()) from None
                for name, problem in failed.items():
                    if name == "extensions":
                        self._shed_extension(fields, english(problem))
                    else:
                        self.drop(
                            self._sources.get(name, name),
                            Notice(code="import_drop_invalid", fields={"problem": problem}),
                        )
                        fields.pop(name, None)
            except PersonaFileError as error:  # the YAML it would save does not load back
                if not fields.get("extensions"):
                    raise ImportProblem(*error.problems) from None
                self._shed_extension(fields, "; ".join(map(problem_english, error.problems)))
        raise ImportProblem(Notice(code="import_not_valid"))

    def _shed_extension(self, fields: dict[str, Any], problem: str) -> None:
        extensions: dict[str, Any] = dict(fields.get("extensions") or {})
        for format_key, kept in list(extensions.items()):
            if isinstance(kept, dict) and kept:
                largest = max(kept, key=lambda k: len(json.dumps(kept[k], ensure_ascii=False)))
                extensions[format_key] = {k: v for k, v in kept.items() if k != largest}
                if not extensions[format_key]:
                    del extensions[format_key]
                self.report.dropped = [
                    d
                    for d in self.report.dropped
                    if d.theirs != largest and not d.theirs.startswith(largest + ".")
                ]
                self.drop(largest, Notice(code="import_drop_too_large", fields={"problem": problem}))
                break
        else:
            extensions = {}
        fields["extensions"] = extensions
