"""The persona layer: shipped personas, every way a persona file can be wrong, schema drift, fuzzing.

Bad-file tests put the bad file next to a good one and check that the good one still loads, that
there is exactly one error, and that its text names the file and the specific problem.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.errors import DashboardError, PersonaFileError
from core.personas.persona import (
    BUNDLED_PERSONAS_DIR,
    MAX_FILE_BYTES,
    SCHEMA_FILE_NAME,
    Persona,
    PersonaCatalog,
    load_personas,
    main,
    persona_json_schema,
)

# Line numbers below refer to this text: name is line 1, context_budget line 5, starter_prompts line 8.
GOOD = """\
name: Tester
avatar: 🧪
description: A persona for tests.
system_prompt: You help with tests.
context_budget: 4096
max_reply_tokens: 512
greeting: ""
starter_prompts: [Hello]
"""

FOODIE_PROMPT = (
    "您是一名美食家，帮助别人了解美食的问题。您的回答需要满足以下要求：\n"
    "1. 回答要使用中文。\n"
    "2. 回答要控制在100字以内。"
)
REASONING_MODEL = re.compile(r"^(gpt-5|o\d)")


def one_error(folder: Path, name: str, content: str | bytes) -> str:
    """Write `name` next to good.yaml, load, and return the one error's text (after checking it)."""
    (folder / "good.yaml").write_text(GOOD, encoding="utf-8")
    target = folder / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    catalog = load_personas(folder)
    assert list(catalog.personas) == ["good"], catalog.errors
    assert len(catalog.errors) == 1, catalog.errors
    error = catalog.errors[0]
    assert isinstance(error, PersonaFileError)
    assert isinstance(error, DashboardError)
    assert error.file_name == name
    assert str(error).startswith(f"{name}: ")
    return str(error)


def with_line(field: str, line: str) -> str:
    """GOOD with the line starting with `field:` replaced (or removed, when `line` is empty)."""
    lines = [line if row.startswith(f"{field}:") else row for row in GOOD.splitlines()]
    return "\n".join(row for row in lines if row) + "\n"


# --- The shipped personas ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> PersonaCatalog:
    return load_personas(BUNDLED_PERSONAS_DIR)


def test_shipped_personas_all_load(shipped: PersonaCatalog) -> None:
    assert shipped.errors == []
    assert len(shipped.personas) >= 6
    assert {
        "foodie",
        "code-reviewer",
        "translator",
        "socratic-tutor",
        "travel-planner",
        "writing-editor",
    } <= set(shipped.personas)


def test_foodie_is_the_seed_persona(shipped: PersonaCatalog) -> None:
    assert next(iter(shipped.personas)) == "foodie"
    foodie = shipped.personas["foodie"]
    assert foodie.name == "美食家"
    assert foodie.avatar == "🍜"
    assert foodie.system_prompt == FOODIE_PROMPT
    assert foodie.model == "gpt-4o-mini"
    assert foodie.sampling.temperature == 0.8
    assert foodie.context_budget == 1024
    assert foodie.max_reply_tokens == 250
    for text in (foodie.description, foodie.greeting, *foodie.starter_prompts):
        assert re.search(r"[\u4e00-\u9fff]", text), text


def test_shipped_personas_are_complete(shipped: PersonaCatalog) -> None:
    for persona in shipped.personas.values():
        assert persona.greeting, persona.id
        assert 3 <= len(persona.starter_prompts) <= 4, persona.id
        assert persona.id == "foodie" or len(persona.system_prompt) > 500, persona.id  # foodie's is given
        assert persona.model in {"gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5-mini"}
    assert max(persona.context_budget for persona in shipped.personas.values()) >= 200_000


def test_shipped_reasoning_models_set_no_temperature(shipped: PersonaCatalog) -> None:
    # gpt-5 and o-series models reject temperature and top_p with a 400.
    reasoning = [p for p in shipped.personas.values() if REASONING_MODEL.match(p.model)]
    assert reasoning
    for persona in reasoning:
        assert persona.sampling.temperature is None and persona.sampling.top_p is None, persona.id


def test_shipped_files_point_editors_at_the_schema(repo_root: Path) -> None:
    assert repo_root / "personas" == BUNDLED_PERSONAS_DIR
    files = sorted(BUNDLED_PERSONAS_DIR.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == f"# yaml-language-server: $schema={SCHEMA_FILE_NAME}", path.name


# --- Schema --------------------------------------------------------------------------------


def test_shipped_schema_matches_the_model() -> None:
    shipped_text = (BUNDLED_PERSONAS_DIR / SCHEMA_FILE_NAME).read_text(encoding="utf-8")
    expected = json.dumps(persona_json_schema(), indent=2, ensure_ascii=False) + "\n"
    assert shipped_text == expected, "run: python -m core.personas --write-schema"


def test_schema_documents_every_field_and_has_no_id() -> None:
    schema = persona_json_schema()
    assert "id" not in schema["properties"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"name", "avatar", "system_prompt", "context_budget"}
    for model in (schema, schema["$defs"]["Sampling"]):
        for name, prop in model["properties"].items():
            assert prop.get("description"), name
    assert schema["properties"]["context_budget"]["minimum"] == 64


# --- The model -----------------------------------------------------------------------------


def test_persona_strips_whitespace_and_is_frozen() -> None:
    persona = Persona(
        id="x",
        name="  Tester  ",
        avatar=" 🧪 ",
        description=" d ",
        system_prompt="\n  prompt \n",
        context_budget=64,
        max_reply_tokens=100_000,  # larger than the budget is allowed: they measure different things
        greeting="",
        starter_prompts=["  hi  "],
    )
    assert (persona.name, persona.avatar, persona.system_prompt, persona.starter_prompts) == (
        "Tester",
        "🧪",
        "prompt",
        ["hi"],
    )
    assert persona.model == "gpt-4o-mini" and persona.tags == [] and persona.sampling.temperature is None
    with pytest.raises(ValidationError):
        persona.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("avatar", ["🍜", "✍️", "ℹ️", "1️⃣", "🇨🇳", "👩🏽\u200d💻"])
def test_avatar_accepts_emoji_sequences(avatar: str) -> None:
    assert Persona.model_validate({**yaml.safe_load(GOOD), "id": "x", "avatar": avatar}).avatar == avatar


@pytest.mark.parametrize("avatar", ["chef", "厨师", "É", "a🍜", "🍜 🍜"])
def test_avatar_refuses_words(avatar: str) -> None:
    with pytest.raises(ValidationError, match="must be an emoji"):
        Persona.model_validate({**yaml.safe_load(GOOD), "id": "x", "avatar": avatar})


# --- Good files ----------------------------------------------------------------------------


def test_order_is_foodie_first_then_file_name(tmp_path: Path) -> None:
    for name in ("b.yaml", "foodie.yaml", "a.yml", "c.YAML"):
        (tmp_path / name).write_text(GOOD, encoding="utf-8")
    catalog = load_personas(tmp_path)
    assert catalog.errors == []
    assert list(catalog.personas) == ["foodie", "a", "b", "c"]
    assert catalog.personas["a"].id == "a"


def test_other_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "README.md").write_text("# notes", encoding="utf-8")
    (tmp_path / SCHEMA_FILE_NAME).write_text("{}", encoding="utf-8")
    (tmp_path / ".hidden.yaml").write_text("not: [valid", encoding="utf-8")
    os.symlink("user@host.1234", tmp_path / ".#good.yaml")  # an Emacs lock file: a dangling symlink
    catalog = load_personas(str(tmp_path))
    assert list(catalog.personas) == ["good"]
    assert catalog.errors == []


def test_utf8_bom_and_sampling_load(tmp_path: Path) -> None:
    text = GOOD + "sampling: {temperature: 0.5, seed: 7, top_p: 0.9}\ntags: [a, b]\n"
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    catalog = load_personas(tmp_path)
    assert catalog.errors == []
    persona = catalog.personas["bom"]
    assert (persona.sampling.temperature, persona.sampling.seed, persona.sampling.top_p) == (0.5, 7, 0.9)
    assert persona.tags == ["a", "b"]


def test_symlink_inside_the_folder_loads(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(GOOD, encoding="utf-8")
    os.symlink("real.yaml", tmp_path / "alias.yaml")
    catalog = load_personas(tmp_path)
    assert catalog.errors == []
    assert list(catalog.personas) == ["alias", "real"]


# --- Bad files: content --------------------------------------------------------------------

BAD_CONTENT = [
    # YAML syntax, with the line
    ("syntax", GOOD + "tags: [a, b\nmodel: x\n", ["YAML syntax error", "line 10, column 6"]),
    ("indent", "name: a\n  avatar: b\n", ["YAML syntax error", "line 2", "mapping values are not allowed"]),
    ("tab", "name: a\n\tavatar: b\n", ["YAML syntax error", "line 2"]),
    ("nul", "name: a\x00b\n", ["line 1, column 8", "U+0000"]),
    # wrong types
    (
        "type-int",
        with_line("context_budget", "context_budget: lots"),
        ["line 5", "context_budget", "integer"],
    ),
    ("type-bool", with_line("context_budget", "context_budget: yes"), ["context_budget", "got true"]),
    (
        "type-float",
        with_line("context_budget", "context_budget: 4096.0"),
        ["context_budget", "integer"],
    ),
    ("type-str", with_line("name", "name: 123"), ["line 1", "name", "valid string", "got 123"]),
    ("type-list", with_line("name", "name: [a]"), ["name", "got a list"]),
    ("type-date", with_line("greeting", "greeting: 2024-01-01"), ["greeting", "date 2024-01-01"]),
    ("type-seq", with_line("starter_prompts", "starter_prompts: Hello"), ["starter_prompts", "list"]),
    ("type-sampling", GOOD + "sampling: 0.7\n", ["line 9", "sampling", "dictionary"]),
    ("type-temp", GOOD + "sampling: {temperature: hot}\n", ["sampling.temperature", "number"]),
    # missing required fields
    ("missing", with_line("system_prompt", ""), ["missing required field 'system_prompt'"]),
    ("missing2", "name: a\n", ["field 'avatar'; missing required field 'description'"]),
    # unknown fields, with the allowed ones
    ("unknown", GOOD + "colour: red\n", ["line 9", "unknown field 'colour'", "allowed fields: name, avatar"]),
    (
        "typo",
        GOOD + "starter_prompt: [x]\n",
        ["unknown field 'starter_prompt'", "did you mean 'starter_prompts'"],
    ),
    (
        "nested",
        GOOD + "sampling:\n  temprature: 0.5\n",
        ["line 10", "unknown field 'temprature' in sampling"],
    ),
    ("id-field", "id: other\n" + GOOD, ["line 1", "unknown field 'id'", "file name"]),
    (
        "many",
        GOOD + "".join(f"k{i}: 1\n" for i in range(30)),
        ["unknown field 'k0'; allowed", "'k9'; and 20 more problems"],
    ),
    ("int-key", GOOD + "1: x\n", ["line 9", "key 1"]),
    # out-of-range numbers
    (
        "budget-low",
        with_line("context_budget", "context_budget: 10"),
        ["context_budget", ">= 64|equal to 64"],
    ),
    (
        "budget-high",
        with_line("context_budget", "context_budget: 2000001"),
        ["context_budget", "2000000"],
    ),
    (
        "reply-zero",
        with_line("max_reply_tokens", "max_reply_tokens: 0"),
        ["line 6", "max_reply_tokens"],
    ),
    (
        "temp-high",
        GOOD + "sampling: {temperature: 2.5}\n",
        ["sampling.temperature", "less than or equal to 2"],
    ),
    ("top-p", GOOD + "sampling: {top_p: 0}\n", ["sampling.top_p", "greater than 0"]),
    # text limits
    ("name-long", with_line("name", "name: " + "n" * 61), ["name", "at most 60"]),
    ("name-blank", with_line("name", "name: '   '"), ["name", "at least 1"]),
    ("desc-lines", with_line("description", 'description: "a\\nb"'), ["description", "single line"]),
    (
        "desc-long",
        with_line("description", "description: " + "d" * 201),
        ["description", "at most 200"],
    ),
    ("prompt-empty", with_line("system_prompt", "system_prompt: ''"), ["system_prompt", "at least 1"]),
    (
        "prompt-long",
        with_line("system_prompt", "system_prompt: " + "p" * 20_001),
        ["system_prompt", "20000"],
    ),
    ("avatar-text", with_line("avatar", "avatar: chef"), ["line 2", "avatar", "emoji"]),
    ("avatar-long", with_line("avatar", "avatar: 🧪🧪🧪🧪🧪🧪🧪🧪🧪"), ["avatar", "at most 8"]),
    (
        "starters-7",
        with_line("starter_prompts", "starter_prompts: [a, b, c, d, e, f, g]"),
        ["at most 6"],
    ),
    ("starter-empty", with_line("starter_prompts", "starter_prompts: [a, '']"), ["starter_prompts[1]"]),
    (
        "starter-long",
        with_line("starter_prompts", f"starter_prompts: [{'s' * 301}]"),
        ["starter_prompts[0]"],
    ),
    ("tag-empty", GOOD + "tags: ['']\n", ["tags[0]", "at least 1"]),
    # encodings and empties
    (
        "latin1",
        GOOD.replace("tests.", "cafe.").encode().replace(b"cafe", b"caf\xe9"),
        ["not UTF-8", "0xe9", "line 3, column 31"],
    ),
    ("utf16", GOOD.encode("utf-16"), ["not UTF-8", "line 1, column 1"]),
    ("empty", b"", ["is empty"]),
    ("comments", "# only a comment\n\n   \n", ["is empty"]),
    ("null", "~\n", ["is empty"]),
    # the wrong shape
    ("list", "- name: a\n- name: b\n", ["top level must be a mapping", "not a list"]),
    ("scalar", "just some text\n", ["top level must be a mapping"]),
    ("two-docs", GOOD + "---\nname: Second\n", ["line 9", "second YAML document", "exactly one"]),
    ("dup-key", GOOD + "name: Again\n", ["line 9", "key 'name' appears twice"]),
    # tags that would build Python objects or unknown types
    (
        "py-new",
        "name: !!python/object/new:os.system [echo]\n",
        ["line 1", "!!python/object/new:os.system", "not allowed"],
    ),
    ("py-name", "name: !!python/name:os.system\n", ["!!python/name:os.system", "not allowed"]),
    ("custom-tag", "name: !secret x\n", ["line 1", "tag !secret is not allowed"]),
    # nesting and size
    ("deep", "name: " + "[" * 5000 + "]" * 5000 + "\n", ["line 1", "nested more than 32 levels"]),
    ("nodes", "a: [" + ", ".join(["1"] * 3000) + "]\n", ["line 1", "more than 2000 keys and values"]),
    # anchors, aliases and merge keys are refused outright, even where they would be harmless
    (
        "legit-alias",
        GOOD.replace('greeting: ""', "greeting: &hi Hello").replace("[Hello]", "[*hi]"),
        ["line 7", "YAML anchors and aliases (&hi, *hi) are not allowed in persona files", "write the value"],
    ),
    ("anchor", GOOD + "tags: &t [a]\n", ["line 9", "anchors and aliases (&t, *t) are not allowed"]),
    ("alias", GOOD + "tags: [a, *t]\n", ["line 9", "YAML aliases (*t) are not allowed in persona files"]),
    ("recursive", "name: &a [*a]\n", ["line 1", "anchors and aliases (&a, *a) are not allowed"]),
    ("aliases", "a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n", ["line 1", "(&a, *a) are not allowed"]),
    ("long-anchor", f"name: &{'n' * 5000} x\n", ["line 1", f"(&{'n' * 19}…, *{'n' * 19}…) are not"]),
    (
        "merge",
        GOOD + "sampling: {<<: {temperature: 0.5}, top_p: 0.9}\n",
        ["line 9", "YAML merge keys (<<) are not allowed in persona files"],
    ),
    ("merge-value", with_line("name", "name: <<"), ["line 1", "merge keys (<<)", "quote '<<'"]),
    ("quoted-merge", GOOD + "'<<': x\n", ["line 9", "unknown field '<<'"]),
]


@pytest.mark.parametrize(("stem", "content", "fragments"), BAD_CONTENT, ids=[case[0] for case in BAD_CONTENT])
def test_bad_file_is_one_clear_error(
    tmp_path: Path, stem: str, content: str | bytes, fragments: list[str]
) -> None:
    message = one_error(tmp_path, f"{stem}.yaml", content)
    for fragment in fragments:
        if "|" in fragment:
            assert re.search(fragment, message), (fragment, message)
        else:
            assert fragment in message, (fragment, message)


def test_python_object_tag_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path.parent / f"{tmp_path.name}-marker"
    content = (
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
        "avatar: !!python/object/apply:pathlib.Path.touch\n"
        f"  [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    message = one_error(tmp_path, "evil.yaml", content)
    assert "!!python/object/apply:os.system is not allowed" in message
    assert not marker.exists()


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):  # 9 aliases per level: 9**9 values if expanded, but only 81 aliases
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    start = time.perf_counter()
    message = one_error(tmp_path, "lol.yaml", "\n".join(lines) + "\n")
    assert time.perf_counter() - start < 2
    assert message == (
        "lol.yaml: line 1: YAML anchors and aliases (&a, *a) are not allowed in persona files; "
        "write the value out"
    )


def test_doubling_aliases_are_refused_fast(tmp_path: Path) -> None:
    # Two aliases per level would expand to 2**40 values.
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 41)]
    start = time.perf_counter()
    message = one_error(tmp_path, "double.yaml", "\n".join(lines) + "\n")
    assert time.perf_counter() - start < 2
    assert "line 1: YAML anchors and aliases (&a0, *a0) are not allowed" in message


def test_file_packed_with_values_is_refused_early(tmp_path: Path) -> None:
    # Parsed in full, 256 KiB of "1," takes the pure-Python parser seconds; the node cap stops it.
    content = "tags: [" + ",".join(["1"] * (MAX_FILE_BYTES // 2 - 8)) + "]\n"
    assert len(content) <= MAX_FILE_BYTES
    start = time.perf_counter()
    message = one_error(tmp_path, "packed.yaml", content)
    assert time.perf_counter() - start < 1
    assert "line 1, column " in message and "more than 2000 keys and values" in message


def test_huge_sparse_file_is_refused_without_reading(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    with open(tmp_path / "huge.yaml", "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MiB long, nothing written
    start = time.perf_counter()
    catalog = load_personas(tmp_path)
    assert time.perf_counter() - start < 1
    assert list(catalog.personas) == ["good"]
    assert [str(error) for error in catalog.errors] == [
        "huge.yaml: is 50.0 MiB; persona files are limited to 256 KiB"
    ]


def test_file_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    message = one_error(tmp_path, "big.yaml", GOOD + "#" * (MAX_FILE_BYTES - len(GOOD.encode()) + 1))
    assert "256 KiB" in message


def test_long_base60_number_is_refused_fast(tmp_path: Path) -> None:
    # YAML 1.1 reads 1:59:59:... as one base-60 int; PyYAML builds it in quadratic time.
    start = time.perf_counter()
    message = one_error(tmp_path, "clock.yaml", "name: 1" + ":59" * 80_000 + "\n")
    assert time.perf_counter() - start < 2
    assert "line 1" in message and "number" in message and "too long" in message


# Found while fuzzing: PyYAML's scalar constructors raise plain Python errors for these.
@pytest.mark.parametrize(
    "content", ["name: 0x_\n", "name: !!int '-'\n", "name: !!timestamp x\n", "name: !!bool x\n"]
)
def test_unreadable_scalars_are_one_error(tmp_path: Path, content: str) -> None:
    assert "could not be read" in one_error(tmp_path, "odd.yaml", content)


def test_file_name_that_is_no_id(tmp_path: Path) -> None:
    assert "valid persona id" in one_error(tmp_path, "my persona.yaml", GOOD)


# --- Bad files: the file system ------------------------------------------------------------


def test_duplicate_ids_second_file_is_the_error(tmp_path: Path) -> None:
    (tmp_path / "foodie.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "foodie.yml").write_text(GOOD.replace("Tester", "Second"), encoding="utf-8")
    catalog = load_personas(tmp_path)
    assert list(catalog.personas) == ["foodie"]
    assert catalog.personas["foodie"].name == "Tester"
    assert len(catalog.errors) == 1
    message = str(catalog.errors[0])
    assert message.startswith("foodie.yml: ") and "'foodie'" in message and "foodie.yaml" in message


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "personas", tmp_path / "secret.yaml"
    folder.mkdir()
    outside.write_text(GOOD, encoding="utf-8")
    os.symlink(outside, folder / "escape.yaml")
    (folder / "good.yaml").write_text(GOOD, encoding="utf-8")
    catalog = load_personas(folder)
    assert list(catalog.personas) == ["good"]
    assert len(catalog.errors) == 1
    message = str(catalog.errors[0])
    assert message.startswith("escape.yaml: ") and "outside the persona folder" in message


def test_relative_symlink_escaping_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (tmp_path / "other.yaml").write_text(GOOD, encoding="utf-8")
    os.symlink("../other.yaml", folder / "sneaky.yaml")
    (folder / "good.yaml").write_text(GOOD, encoding="utf-8")
    catalog = load_personas(folder)
    assert list(catalog.personas) == ["good"]
    target = tmp_path.resolve() / "other.yaml"
    assert [str(error) for error in catalog.errors] == [
        f"sneaky.yaml: is a symlink to {target}, outside the persona folder; refused"
    ]


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    os.symlink("missing.yaml", tmp_path / "broken.yaml")
    catalog = load_personas(tmp_path)
    assert list(catalog.personas) == ["good"]
    assert len(catalog.errors) == 1 and "broken.yaml: is a broken symlink" in str(catalog.errors[0])


def test_folder_named_like_a_persona(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "dir.yaml").mkdir()
    catalog = load_personas(tmp_path)
    assert list(catalog.personas) == ["good"]
    assert [str(error) for error in catalog.errors] == ["dir.yaml: is a folder, not a regular file"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.yaml")  # opening this for reading would block forever
    catalog = load_personas(tmp_path)
    assert list(catalog.personas) == ["good"]
    assert [str(error) for error in catalog.errors] == ["pipe.yaml: is a special file, not a regular file"]


def test_missing_folder_is_an_error_not_an_exception(tmp_path: Path) -> None:
    catalog = load_personas(tmp_path / "nowhere")
    assert catalog.personas == {}
    assert len(catalog.errors) == 1
    assert "nowhere" in str(catalog.errors[0]) and "does not exist" in str(catalog.errors[0])


def test_file_instead_of_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    catalog = load_personas(tmp_path / "file.txt")
    assert catalog.personas == {}
    assert len(catalog.errors) == 1 and "is not a folder" in str(catalog.errors[0])


def test_command_line_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(BUNDLED_PERSONAS_DIR)]) == 0
    assert "ok     foodie" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("name: [", encoding="utf-8")
    assert main([str(tmp_path)]) == 1
    assert "error  bad.yaml: line" in capsys.readouterr().out


# --- Fuzzing -------------------------------------------------------------------------------

FRAGMENTS = [
    *("name", "avatar", "description", "system_prompt", "model", "sampling", "temperature", "seed"),
    *("context_budget", "max_reply_tokens", "greeting", "starter_prompts", "tags", "id"),
    *(":", ": ", "\n", "  ", "- ", "[", "]", "{", "}", ", ", "? ", "#", "'", '"', "|", ">-", "\\"),
    *("&a ", "*a", "&b ", "*b", "<<: ", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n"),
    *("!!python/object/apply:os.system ", "!!binary ", "!!int ", "!!float ", "!!timestamp ", "!!set ", "!x "),
    *("~", "null", "yes", "0x_", "0o9", "1:2", "1e400", ".nan", "-", "0", "64", "1024", "2000001", "-1.5"),
    *("🍜", "中文", "\t", "\r", "\x00", "\x85", "\u2028", "\ufeff", "\ud7ff", "x" * 70),
]
yamlish = st.lists(st.sampled_from(FRAGMENTS), max_size=80).map("".join)
mutated_good = st.tuples(st.integers(0, len(GOOD)), yamlish).map(
    lambda cut: GOOD[: cut[0]] + cut[1] + GOOD[cut[0] :]
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_one_outcome(folder: Path, content: bytes) -> None:
    """Loading never raises; fuzz.yaml becomes a persona or exactly one error, and good.yaml loads."""
    (folder / "good.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "fuzz.yaml").write_bytes(content)
    catalog = load_personas(folder)
    assert "good" in catalog.personas
    assert all(error.file_name == "fuzz.yaml" for error in catalog.errors)
    assert len(catalog.errors) == (0 if "fuzz" in catalog.personas else 1)
    if catalog.errors:
        assert str(catalog.errors[0]).startswith("fuzz.yaml: ")
        assert "could not be loaded" not in str(catalog.errors[0])  # the catch-all means a loader gap


@FUZZ
@given(content=st.binary(max_size=2000))
def test_fuzz_random_bytes(tmp_path: Path, content: bytes) -> None:
    assert_one_outcome(tmp_path, content)


@FUZZ
@given(text=yamlish)
def test_fuzz_yaml_like_text(tmp_path: Path, text: str) -> None:
    assert_one_outcome(tmp_path, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=mutated_good)
def test_fuzz_mutated_persona(tmp_path: Path, text: str) -> None:
    assert_one_outcome(tmp_path, text.encode("utf-8", "surrogatepass"))
