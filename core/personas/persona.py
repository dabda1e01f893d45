"""Personas: one YAML file per persona, validated by a pydantic model, loaded file by file.

A persona folder holds `<id>.yaml` (or `.yml`) files; the file stem is the persona's id. Loading
never raises for anything a file contains: each file either becomes a `Persona` or one
`PersonaFileError` that names the file and says what is wrong (with the line where known), and a bad
file never stops the others. Files are parsed with a safe loader that builds plain values only,
refuses anchors and aliases, and caps size, nesting and node count, so a hostile file can neither
run code nor exhaust memory or time.

`python -m core.personas [DIR]` checks a folder; `--write-schema` regenerates persona.schema.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from core.chat.settings import PolicyName, Sampling
from core.errors import PersonaFileError, Problem, problem_english
from core.notices import Notice
from core.personas.avatars import AvatarImageError, check_avatar_png, decode_avatar
from core.validation import LineOf, describe_value, problem_notices

__all__ = [
    "BUNDLED_PERSONAS_DIR",
    "DEFAULT_MODEL",
    "MAX_FILE_BYTES",
    "SCHEMA_FILE_NAME",
    "SEED_PERSONA_ID",
    "Example",
    "FileProblem",
    "Persona",
    "PersonaCatalog",
    "PersonaFile",
    "PersonaFileError",
    "chat_avatar",
    "examples_from_text",
    "examples_text",
    "load_personas",
    "parse_persona",
    "persona_json_schema",
    "persona_yaml",
    "read_yaml",
    "system_message",
    "valid_persona_id",
    "write_persona_schema",
]

BUNDLED_PERSONAS_DIR = Path(__file__).resolve().parents[2] / "personas"
SCHEMA_FILE_NAME = "persona.schema.json"
SEED_PERSONA_ID = "foodie"  # listed first: it is the persona the app starts with
DEFAULT_MODEL = "gpt-4o-mini"
PERSONA_SUFFIXES = (".yaml", ".yml")

# A real persona file is a few KiB; the limits only have to stop hostile or mistaken files early.
MAX_FILE_BYTES = 256 * 1024
MAX_NODES = 2_000  # keys and values
MAX_DEPTH = 32
MAX_PROBLEMS_SHOWN = 10
MAX_EXTENSIONS_BYTES = 32 * 1024
MAX_EXAMPLES = 40
#: Introduces the few-shot examples in the system message (see `system_message`).
EXAMPLES_HEADING = "Example exchanges (they show how to answer; they are not part of this conversation):"

# --- The model -----------------------------------------------------------------------------


# The validators raise errors of their own types (validation.OWN_CODES), with the values their
# text needs in the context, so a form can word them in its language (`validation.<type>`).


def _one_line(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise PydanticCustomError("one_line", "must be a single line (no line breaks)")
    return value


def _emoji(value: str) -> str:
    # st.chat_message takes an avatar that is not exactly one emoji of Streamlit's list for an
    # image path or URL (🙂🙂 and /🙂 crash the chat; a URL would load), so the check is Streamlit's
    # own (imported here only: it loads Streamlit).
    from streamlit.string_util import is_emoji

    if not is_emoji(value):
        raise PydanticCustomError(
            "emoji", "must be an emoji such as 🍜 (one emoji only), got {value}", {"value": repr(value)}
        )
    return value


def _avatar_image(value: str) -> str:
    try:
        check_avatar_png(decode_avatar(value))
    except AvatarImageError as exc:
        raise PydanticCustomError(
            "avatar_image", "the avatar image {problem}", {"problem": str(exc)}
        ) from None
    return value


def _small_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_EXTENSIONS_BYTES:
        raise PydanticCustomError(
            "extensions_too_large",
            "holds {size} KiB as JSON; extensions are limited to {limit} KiB",
            {"size": size // 1024, "limit": MAX_EXTENSIONS_BYTES // 1024},
        )
    return value


_ONE_LINE_SCHEMA: JsonDict = {"pattern": "^[^\\r\\n]*$"}
OneLine = Annotated[str, AfterValidator(_one_line)]
StarterPrompt = Annotated[str, Field(min_length=1, max_length=300)]
# Ids end up in URLs and session keys, so the file stems that become them are kept simple.
PersonaId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\w[\w.-]*$")]
_ID_ADAPTER: TypeAdapter[str] = TypeAdapter(PersonaId)
Tag = Annotated[
    str, Field(min_length=1, max_length=40, json_schema_extra=_ONE_LINE_SCHEMA), AfterValidator(_one_line)
]


class Example(BaseModel):
    """One message of a few-shot example exchange."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, title="Example message")

    role: Literal["user", "assistant"] = Field(description="Who says it: user or assistant.")
    content: str = Field(min_length=1, max_length=4_000, description="What is said (1-4,000 characters).")


class PersonaFile(BaseModel):
    """A persona as written in its YAML file. The persona's id is the file name, so it is not a field."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, title="Persona file")

    name: OneLine = Field(
        min_length=1,
        max_length=60,
        json_schema_extra=_ONE_LINE_SCHEMA,
        description="Display name, one line of 1-60 characters.",
    )
    avatar: Annotated[str, AfterValidator(_emoji)] = Field(
        min_length=1,
        max_length=8,
        description="One emoji (up to 8 characters) shown as the persona's avatar, e.g. 🍜.",
    )
    description: OneLine = Field(
        min_length=1,
        max_length=200,
        json_schema_extra=_ONE_LINE_SCHEMA,
        description="One line (at most 200 characters) saying what the persona is for.",
    )
    system_prompt: str = Field(
        min_length=1,
        max_length=20_000,
        description="Sent as the system message at the start of every request (1-20,000 characters).",
    )
    model: str = Field(
        DEFAULT_MODEL,
        min_length=1,
        max_length=200,
        description="Model name sent to the OpenAI-compatible server, e.g. gpt-4o-mini, gpt-4.1, gpt-5-mini.",
    )
    sampling: Sampling = Field(
        default_factory=Sampling,
        description="Sampling options; an option left out is not sent. gpt-5 and o-series models "
        "reject temperature and top_p, so leave them out for those models.",
    )
    context_budget: int = Field(
        ge=64,
        le=2_000_000,
        description="Most prompt tokens one request may use (system prompt + kept history + new "
        "message); older turns are trimmed to fit. 64-2,000,000.",
    )
    max_reply_tokens: int = Field(
        ge=1,
        le=200_000,
        description="Cap on the tokens of one reply (1-200,000); separate from the context budget.",
    )
    greeting: str = Field(
        "",
        max_length=2_000,
        description="Opening message of a new conversation (at most 2,000 characters; may be empty).",
    )
    starter_prompts: list[StarterPrompt] = Field(
        default_factory=list,
        max_length=6,
        description="Up to 6 example first messages a user can start a conversation with "
        "(each 1-300 characters).",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        description="Short labels for grouping and filtering personas (each 1-40 characters).",
    )
    context_policy: PolicyName = Field(
        "drop_oldest",
        description="How a conversation that outgrows its context budget is fitted: drop_oldest drops "
        "the oldest exchanges; summarize folds them into a running summary written by a model (sent "
        "after the system prompt, at most a quarter of the budget); stable_prefix drops them several "
        "at a time, down to low_water of the budget, so the turns after only append and a server's "
        "prompt cache keeps serving the prefix. Users can switch it per conversation.",
    )
    low_water: float | None = Field(
        None,
        ge=0.1,
        le=0.95,
        description="The share of the budget (0.1-0.95) a stable_prefix step drops the prompt down to "
        "(0.65 when left out); when set, summarize folds down to it too.",
    )
    summarizer_model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Model that writes the summaries (context_policy: summarize), e.g. a cheaper one "
        "such as gpt-4o-mini; left out, the conversation's own model writes them.",
    )
    examples: list[Example] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="Few-shot example messages (role and content, up to 40), sent in the system "
        "message after the system prompt on every request; they count against the context budget.",
    )
    avatar_image: Annotated[str, AfterValidator(_avatar_image)] | None = Field(
        None,
        description="A PNG picture (base64, at most 96 KiB and 256 pixels a side) drawn instead of "
        "the emoji; imports write it. Never a URL: nothing is fetched.",
    )
    extensions: Annotated[dict[str, JsonValue], AfterValidator(_small_json)] = Field(
        default_factory=dict,
        description="Fields of another tool's format with no place here, by format (e.g. "
        "character_card, lobehub), kept so an export to that format gives them back (at most 32 KiB).",
    )


class Persona(PersonaFile):
    """A loaded persona: the file's fields plus `id`, the file stem."""

    id: PersonaId = Field(description="The file name without .yaml/.yml.")


def system_message(persona: PersonaFile) -> str:
    """The system message a conversation with `persona` starts with: the system prompt, then the
    few-shot examples under a heading. One message, so the examples are counted, trimmed never,
    stored and shown with it (the next-call view shows them as part of the system message)."""
    if not persona.examples:
        return persona.system_prompt
    return "\n\n".join([persona.system_prompt, EXAMPLES_HEADING + "\n" + examples_text(persona.examples)])


_SPEAKERS = {"user": "User", "assistant": "Assistant"}
_SPEAKER_LINE = re.compile(r"^(User|Assistant):[ \t]?", re.MULTILINE)


def examples_text(examples: Sequence[Example]) -> str:
    """Examples as lines `User: …` / `Assistant: …` (a message's own lines follow its first);
    `examples_from_text` reads them back."""
    return "\n".join(f"{_SPEAKERS[example.role]}: {example.content}" for example in examples)


def examples_from_text(text: str) -> list[dict[str, str]]:
    """`examples_text` read back (for the editor): a line starting `User:` or `Assistant:` starts
    a message; text before the first is ignored. Validation is the model's."""
    starts = list(_SPEAKER_LINE.finditer(text))
    messages = []
    for index, start in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        role = "user" if start.group(1) == "User" else "assistant"
        messages.append({"role": role, "content": text[start.end() : end].strip()})
    return messages


def chat_avatar(persona: PersonaFile) -> str | bytes:
    """What a view draws for the persona: its avatar image (PNG bytes) if it has one, else its emoji."""
    return decode_avatar(persona.avatar_image) if persona.avatar_image else persona.avatar


def persona_json_schema() -> dict[str, Any]:
    """JSON Schema of a persona file (no `id`: that is the file name), for editors and docs."""
    schema = PersonaFile.model_json_schema()
    # Declared draft-07: yaml-language-server (the VS Code YAML extension) validates draft-07 and
    # warns on 2020-12. Pydantic's output uses no newer keyword, and "#/$defs/..." refs are plain
    # JSON pointers that draft-07 validators resolve too.
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


def write_persona_schema(path: str | Path | None = None) -> Path:
    """Write `persona_json_schema()` to `path` (default: the bundled personas/persona.schema.json)."""
    target = Path(path) if path is not None else BUNDLED_PERSONAS_DIR / SCHEMA_FILE_NAME
    target.write_text(
        json.dumps(persona_json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return target


# --- Loading -------------------------------------------------------------------------------


@dataclass
class PersonaCatalog:
    """What one persona folder held: the personas that loaded, and one error per file that did not."""

    directory: Path
    personas: dict[str, Persona] = field(default_factory=dict)  # the seed persona first, then by file name
    errors: list[PersonaFileError] = field(default_factory=list)


class FileProblem(ValueError):
    """This file (or YAML text) cannot be read, for the reasons given (`read_yaml` raises it)."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(map(problem_english, problems)))
        self.problems = problems


# The standard YAML types only; Python object tags (!!python/...) and custom tags are refused.
_ALLOWED_TAGS = {tag for tag in yaml.SafeLoader.yaml_constructors if tag}
_MERGE_TAG = "tag:yaml.org,2002:merge"
# PyYAML turns "1:59:59:..." (YAML 1.1 base-60) into an int in quadratic time, and Python refuses
# to print ints past 4300 digits; no persona number needs more than a few digits.
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
MAX_NUMBER_CHARS = 40


class _PersonaLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]  # Any without yaml stubs
    """SafeLoader (plain values only) that checks every node as it is composed, before any is built.

    Anchors, aliases and merge keys are refused outright, so the document is a plain tree no bigger
    than the text: no alias bomb, no self-reference. Depth is capped because composing recurses; the
    node count because the pure-Python parser is slow (~100 KB/s on dense input), so a file packed
    with values fails in milliseconds rather than seconds.
    """

    def __init__(self, stream: str, max_nodes: int = MAX_NODES) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._max_nodes = max_nodes

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call, unused-ignore]
        line, column = event.start_mark.line + 1, event.start_mark.column + 1
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            name = _cut(event.anchor)
            if isinstance(event, yaml.AliasEvent):
                raise FileProblem(Notice(code="persona_alias", fields={"line": line, "name": name}))
            raise FileProblem(Notice(code="persona_anchor", fields={"line": line, "name": name}))
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise FileProblem(
                Notice(
                    code="persona_too_many_nodes",
                    fields={"line": line, "column": column, "limit": self._max_nodes},
                )
            )
        if self._depth >= MAX_DEPTH:
            raise FileProblem(
                Notice(code="persona_too_deep", fields={"line": line, "column": column, "limit": MAX_DEPTH})
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            _check_node(node)
        return node


def _check_node(node: Node) -> None:
    """Refuse what the safe loader would build without complaint: odd tags, long numbers, repeated keys."""
    line = _line(node)
    if node.tag == _MERGE_TAG:
        raise FileProblem(Notice(code="persona_merge_key", fields={"line": line}))
    if node.tag not in _ALLOWED_TAGS:
        raise FileProblem(Notice(code="persona_tag", fields={"line": line, "tag": _short_tag(node.tag)}))
    if isinstance(node, ScalarNode) and node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        raise FileProblem(
            Notice(code="persona_long_number", fields={"line": line, "length": len(node.value)})
        )
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode):
                if key_node.value in seen:
                    raise FileProblem(
                        Notice(
                            code="persona_duplicate_key",
                            fields={"line": _line(key_node), "key": key_node.value},
                        )
                    )
                seen.add(key_node.value)


def _line(node: Node) -> int:
    line: int = node.start_mark.line
    return line + 1


def _cut(name: str) -> str:
    return name if len(name) <= 20 else name[:19] + "…"


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Notice:
    """Where PyYAML stopped and why (its own words, quoted)."""
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return Notice(
            code="persona_yaml_character",
            fields={"line": line, "column": column, "character": f"U+{exc.character:04X}"},
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context: str | Notice = ""
        if exc.context and exc.context_mark is not None:
            start = exc.context_mark
            context = Notice(
                code="persona_yaml_context",
                fields={"context": exc.context, "line": start.line + 1, "column": start.column + 1},
            )
        where = {"line": mark.line + 1, "column": mark.column + 1, "problem": exc.problem, "context": context}
        if isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError):
            return Notice(code="persona_yaml_syntax", fields=where)
        return Notice(code="persona_yaml_error", fields=where)
    return Notice(code="persona_yaml_other", fields={"problem": str(exc)})


def read_yaml(text: str, *, max_nodes: int = MAX_NODES) -> Any:
    """One YAML document read as persona files are (plain values, no aliases, capped size and
    nesting), for other tools' YAML; raises a `ValueError` whose `problems` say what is wrong
    and where."""
    try:
        return _parse(text, max_nodes)[0]
    except yaml.YAMLError as exc:
        raise FileProblem(_yaml_problem(exc, text)) from None


def _parse(text: str, max_nodes: int = MAX_NODES) -> tuple[Any, Node | None]:
    """The document's value and its root node (for line numbers); (None, None) for an empty file."""
    loader = _PersonaLoader(text, max_nodes)
    try:
        try:
            root = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if exc.problem != "but found another document" or exc.problem_mark is None:
                raise
            raise FileProblem(
                Notice(code="persona_second_document", fields={"line": exc.problem_mark.line + 1})
            ) from None
        if root is None:
            return None, None
        try:
            return loader.construct_document(root), root
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            # PyYAML's constructors raise these for odd scalars such as "0x_" or "!!int -".
            raise FileProblem(
                Notice(code="persona_value_unreadable", fields={"problem": f"{type(exc).__name__}: {exc}"})
            ) from None
    finally:
        loader.dispose()


def _line_of(root: Node | None) -> LineOf:
    """For `describe_problems`: the line of the YAML node a pydantic error location points at."""

    def line_of(loc: tuple[str | int, ...], want_key: bool) -> int | None:
        node = root
        for index, part in enumerate(loc):
            if isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                        node = key_node if want_key and index == len(loc) - 1 else value_node
                        break
                else:
                    return None
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return None
        return _line(node) if node is not None else None

    return line_of


def _read_bytes(entry: Path, directory: Path) -> bytes:
    """The file's bytes, after refusing symlinks out of the folder, non-regular files and big files."""
    target = entry
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):
            raise FileProblem(Notice(code="persona_broken_symlink")) from None
        if not target.is_relative_to(directory):
            raise FileProblem(Notice(code="persona_symlink_outside", fields={"target": str(target)}))
    try:
        info = os.stat(target)
    except OSError as exc:
        raise FileProblem(_unreadable(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise FileProblem(Notice(code="persona_is_folder"))
        raise FileProblem(Notice(code="persona_is_special"))
    # Size is checked before reading so a huge file is never read into memory; fstat on the open
    # descriptor repeats the checks in case the file was swapped in between.
    if info.st_size > MAX_FILE_BYTES:
        raise FileProblem(_file_too_big(info.st_size))
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise FileProblem(_unreadable(exc)) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(Notice(code="persona_not_regular"))
        if info.st_size > MAX_FILE_BYTES:
            raise FileProblem(_file_too_big(info.st_size))
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise FileProblem(_file_too_big(len(data)))
    return data


def _unreadable(exc: OSError) -> Notice:
    return Notice(code="persona_unreadable", fields={"problem": str(exc.strerror or exc)})


def _file_too_big(size: int) -> Notice:
    shown = f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"
    return Notice(code="persona_too_large", fields={"size": shown, "limit": MAX_FILE_BYTES // 1024})


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = data[:offset].count(b"\n") + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise FileProblem(
            Notice(
                code="persona_not_utf8",
                fields={"byte": f"0x{data[offset]:02x}", "line": line, "column": column},
            )
        ) from None


def valid_persona_id(persona_id: str) -> bool:
    """Whether `persona_id` may name a persona (and its file)."""
    try:
        _ID_ADAPTER.validate_python(persona_id)
    except ValidationError:
        return False
    return True


def _check_id(persona_id: str, *, file_name: bool) -> None:
    """Refuse an id (or the file name that gives it) that cannot name a persona."""
    if valid_persona_id(persona_id):
        return
    if file_name:
        raise FileProblem(Notice(code="persona_bad_file_name", fields={"id": repr(persona_id)}))
    raise FileProblem(Notice(code="persona_bad_id", fields={"id": repr(persona_id)}))


def _persona_from_text(text: str, persona_id: str) -> Persona:
    try:
        data, root = _parse(text)
    except yaml.YAMLError as exc:
        raise FileProblem(_yaml_problem(exc, text)) from None
    if data is None:
        raise FileProblem(Notice(code="persona_empty"))
    if not isinstance(data, dict):
        raise FileProblem(Notice(code="persona_not_mapping", fields={"value": describe_value(data)}))
    try:
        fields = PersonaFile.model_validate(data, strict=True)
    except ValidationError as exc:
        problems = problem_notices(
            exc,
            model=PersonaFile,
            line_of=_line_of(root),
            unknown_hints={"id": Notice(code="persona_id_hint", fields={"id": repr(persona_id)})},
            max_shown=MAX_PROBLEMS_SHOWN,
        )
        raise FileProblem(*problems) from None
    return Persona(id=persona_id, **dict(fields))


def _load_file(entry: Path, directory: Path) -> Persona:
    _check_id(entry.stem, file_name=True)
    return _persona_from_text(_decode(_read_bytes(entry, directory)), entry.stem)


def parse_persona(text: str, persona_id: str, *, name: str | None = None) -> Persona:
    """A persona from YAML text (an upload, the editor's export), checked exactly as a persona
    file is; raises `PersonaFileError` naming `name` (default "<id>.yaml") and each problem."""
    label = name or f"{persona_id}.yaml"
    try:
        if len(text.encode()) > MAX_FILE_BYTES:
            raise FileProblem(_file_too_big(len(text.encode())))
        _check_id(persona_id, file_name=False)
        return _persona_from_text(text, persona_id)
    except FileProblem as problem:
        raise PersonaFileError(label, list(problem.problems)) from None


def persona_yaml(persona: PersonaFile) -> str:
    """The persona as a file the loader accepts (fields in the model's order; the id is the
    file name, so it is left out)."""
    fields = PersonaFile.model_validate(persona.model_dump(exclude={"id"})).model_dump(
        mode="json", exclude_defaults=True
    )
    # Required fields stay even when they equal a default.
    for name, info in PersonaFile.model_fields.items():
        if info.is_required():
            fields.setdefault(name, getattr(persona, name))
    ordered = {name: fields[name] for name in PersonaFile.model_fields if name in fields}
    dumped: str = yaml.dump(ordered, Dumper=_PersonaDumper, allow_unicode=True, sort_keys=False, width=100)
    return dumped


class _PersonaDumper(yaml.SafeDumper):  # type: ignore[misc, unused-ignore]  # Any without yaml stubs
    """Writes text with line breaks (a system prompt) as a readable `|` block."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PersonaDumper.add_representer(str, _represent_text)


def load_personas(directory: str | Path) -> PersonaCatalog:
    """Load every `*.yaml` / `*.yml` persona in `directory`; never raises for what the files contain.

    Files whose names start with "." (editor backups, lock files) are skipped. The first file (by
    name) claims its id, so foodie.yml next to foodie.yaml is an error naming both.
    """
    folder = Path(directory)
    catalog = PersonaCatalog(directory=folder)
    try:
        resolved = folder.resolve(strict=True)
        if not resolved.is_dir():
            raise NotADirectoryError
        entries = sorted(
            (entry for entry in resolved.iterdir() if _is_persona_name(entry.name)),
            key=lambda entry: entry.name,
        )
    except FileNotFoundError:
        catalog.errors.append(PersonaFileError(str(folder), Notice(code="persona_folder_missing")))
        return catalog
    except NotADirectoryError:
        catalog.errors.append(PersonaFileError(str(folder), Notice(code="persona_folder_not_folder")))
        return catalog
    except (OSError, RuntimeError) as exc:
        catalog.errors.append(
            PersonaFileError(
                str(folder), Notice(code="persona_folder_unreadable", fields={"problem": str(exc)})
            )
        )
        return catalog

    claimed: dict[str, str] = {}  # id -> the file that claimed it
    loaded: list[Persona] = []
    for entry in entries:
        stem = entry.stem
        if stem in claimed:
            catalog.errors.append(
                PersonaFileError(
                    entry.name, Notice(code="persona_id_taken", fields={"id": stem, "other": claimed[stem]})
                )
            )
            continue
        claimed[stem] = entry.name
        try:
            loaded.append(_load_file(entry, resolved))
        except FileProblem as problem:
            catalog.errors.append(PersonaFileError(entry.name, list(problem.problems)))
        except Exception as exc:  # a loader bug must cost one file, never the whole catalog
            catalog.errors.append(
                PersonaFileError(entry.name, f"could not be loaded: {type(exc).__name__}: {exc}")
            )
    loaded.sort(key=lambda persona: persona.id != SEED_PERSONA_ID)  # stable: the rest stay in file order
    catalog.personas = {persona.id: persona for persona in loaded}
    return catalog


def _is_persona_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(PERSONA_SUFFIXES)


# --- Command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["import"]:
        return _import_command(args[1:])
    if args[:1] == ["export"]:
        return _export_command(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m core.personas",
        description="Check a persona folder. Also: 'import FILE... --out DIR' (character cards, LobeHub, "
        "NextChat, Open WebUI, LibreChat) and 'export PERSONA.yaml --format FORMAT --out DIR'.",
    )
    parser.add_argument("directory", nargs="?", default=str(BUNDLED_PERSONAS_DIR), help="persona folder")
    parser.add_argument(
        "--write-schema", action="store_true", help=f"regenerate {SCHEMA_FILE_NAME} in the bundled folder"
    )
    parsed = parser.parse_args(args)
    if parsed.write_schema:
        print(f"wrote {write_persona_schema()}")
        return 0
    catalog = load_personas(parsed.directory)
    for persona in catalog.personas.values():
        print(f"ok     {persona.id}: {persona.avatar} {persona.name} ({persona.model})")
    for error in catalog.errors:
        print(f"error  {error}")
    return 1 if catalog.errors else 0


def _import_command(argv: list[str]) -> int:
    """Write one persona YAML per persona found in each file, and print each file's report."""
    from core.personas.formats import FileImport, import_files, read_import_file
    from core.personas.mapping import DEFAULT_USER_NAME

    parser = argparse.ArgumentParser(
        prog="python -m core.personas import",
        description="Import personas from character cards (JSON, PNG, .charx), LobeHub agents, NextChat "
        "masks, Open WebUI model exports and LibreChat modelSpecs YAML.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder the persona YAML files are written to"
    )
    parser.add_argument(
        "--user-name", default=DEFAULT_USER_NAME, help="what {{user}} becomes (default: %(default)s)"
    )
    parsed = parser.parse_args(argv)
    out = Path(parsed.out)
    out.mkdir(parents=True, exist_ok=True)
    taken = {entry.stem for entry in out.iterdir() if _is_persona_name(entry.name)}
    read: list[tuple[str, bytes]] = []
    failed: list[FileImport] = []
    for name in parsed.files:
        try:
            read.append((Path(name).name, read_import_file(name)))
        except PersonaFileError as error:
            failed.append(FileImport(Path(name).name, error=error))
    errors = 0
    for result in [*import_files(read, user_name=parsed.user_name, taken_ids=taken), *failed]:
        if result.error is not None:
            errors += 1
            print(f"error  {result.error}")
            continue
        for imported in result.personas:
            target = out / f"{imported.persona.id}.yaml"
            target.write_text(persona_yaml(imported.persona), encoding="utf-8")
            print(f"ok     {result.file_name} -> {target}")
            print("\n".join("       " + line for line in imported.report.lines()))
    return 1 if errors else 0


def _export_command(argv: list[str]) -> int:
    from core.personas.formats import EXPORT_FORMATS, export_persona

    parser = argparse.ArgumentParser(
        prog="python -m core.personas export",
        description="Export a persona as a V3 character card (JSON or PNG) or a LobeHub agent.",
    )
    parser.add_argument("persona", metavar="PERSONA.yaml")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
    parser.add_argument("--out", required=True, metavar="DIR")
    parsed = parser.parse_args(argv)
    source = Path(parsed.persona)
    try:
        persona = _load_file(source, source.resolve().parent)
    except FileProblem as problem:
        print(f"error  {PersonaFileError(source.name, list(problem.problems))}")
        return 1
    exported = export_persona(persona, parsed.export_format)
    out = Path(parsed.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / exported.file_name).write_bytes(exported.data)
    print(f"ok     {source.name} -> {out / exported.file_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
