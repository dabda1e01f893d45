"""Personas from other tools' formats and back: character cards V1/V2/V3 (JSON, PNG, .charx), LobeHub,
NextChat, Open WebUI and LibreChat, the per-file report, exports that import back to the same
persona, and bad files that fail alone with a clear error. Every test file is built here."""

from __future__ import annotations

import base64
import http.server
import io
import json
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.i18n import english
from core.personas.avatars import avatar_png, encode_avatar
from core.personas.character_cards import card_png, png_text_chunks
from core.personas.formats import EXPORT_FORMATS, FileImport, export_persona, import_file, import_files
from core.personas.mapping import MAX_IMPORT_BYTES
from core.personas.persona import BUNDLED_PERSONAS_DIR, Persona, load_personas, parse_persona, persona_yaml


def picture(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_text(image: bytes, **texts: str) -> bytes:
    """`image` with tEXt chunks inserted before IEND, written by hand (as other tools do)."""
    iend = image.rindex(b"IEND") - 4
    extra = b"".join(chunk(b"tEXt", k.encode() + b"\0" + v.encode("latin-1")) for k, v in texts.items())
    return image[:iend] + extra + image[iend:]


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def only(result: FileImport) -> Persona:
    assert result.error is None, result.error
    assert len(result.personas) == 1
    return result.personas[0].persona


def v2_card(**data: Any) -> dict[str, Any]:
    base = {
        "name": "Aria",
        "description": "{{char}} is a travelling bard who sings to {{user}}.",
        "personality": "cheerful, curious",
        "scenario": "A crowded tavern.",
        "first_mes": "Well met, {{user}}!",
        "mes_example": "<START>\n{{user}}: Sing for me.\n{{char}}: *tunes her lute*\nGladly!\n"
        "<START>\n<USER>: Where from?\n<BOT>: The north.",
        "creator_notes": "A friendly bard.",
        "system_prompt": "",
        "post_history_instructions": "Stay in character.",
        "alternate_greetings": ["Hello again."],
        "tags": ["fantasy", "music"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "Be brief.", "depth": 4}},
    }
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {**base, **data}}


# --- Character cards -------------------------------------------------------------------------


def test_a_v2_card_maps_as_the_issue_says() -> None:
    result = import_file("aria.json", json.dumps(v2_card()).encode(), user_name="Sam")
    persona = only(result)
    report = result.personas[0].report
    assert persona.id == "aria" and persona.name == "Aria" and persona.avatar == "🎭"
    assert persona.system_prompt == (
        "Aria is a travelling bard who sings to Sam.\n\nAria's personality: cheerful, curious\n\n"
        "Scenario: A crowded tavern."
    )
    assert persona.greeting == "Well met, Sam!"
    assert persona.description == "A friendly bard."
    assert persona.tags == ["fantasy", "music"]
    assert [(e.role, e.content) for e in persona.examples] == [
        ("user", "Sing for me."),
        ("assistant", "*tunes her lute*\nGladly!"),
        ("user", "Where from?"),
        ("assistant", "The north."),
    ]
    kept = persona.extensions["character_card"]
    assert isinstance(kept, dict)
    assert kept["post_history_instructions"] == "Stay in character."
    assert kept["extensions"] == {"talkativeness": "0.5", "depth_prompt": {"prompt": "Be brief.", "depth": 4}}
    dropped = {d.theirs: english(d.reason) for d in report.dropped}
    assert "not sent" in dropped["post_history_instructions"]
    assert "one greeting" in dropped["alternate_greetings"]
    assert {m.ours for m in report.mapped} >= {"name", "system_prompt", "greeting", "examples", "tags"}
    assert english(report.source_format) == "character card V2 (JSON)"
    assert 0 < report.system_tokens < report.context_budget and not report.budget_warning


def test_fields_beside_a_v2_cards_data_are_reported_not_kept() -> None:
    card = {**v2_card(), "name": "Old copy", "description": "old", "fav": False}
    result = import_file("aria.json", json.dumps(card).encode())
    assert only(result).name == "Aria"
    assert {d.theirs: english(d.reason) for d in result.personas[0].report.dropped}[
        "name, description, fav"
    ] == ("outside the card's data; not read")
    assert "name" not in only(result).extensions["character_card"]  # type: ignore[operator]


def test_the_user_name_defaults_to_user() -> None:
    persona = only(import_file("aria.json", json.dumps(v2_card()).encode()))
    assert persona.greeting == "Well met, User!"


def test_a_v1_card_and_a_v3_card_import() -> None:
    v1 = {"name": "Old", "description": "An old {{char}}.", "first_mes": "Hi", "mes_example": ""}
    persona = only(import_file("old.json", json.dumps(v1).encode()))
    assert persona.system_prompt == "An old Old." and persona.greeting == "Hi"
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {**v2_card()["data"], "nickname": "Ari", "group_only_greetings": ["Hi all"], "assets": []},
    }
    result = import_file("aria3.json", json.dumps(v3).encode())
    persona = only(result)
    assert persona.system_prompt.startswith("Ari is a travelling bard")  # {{char}} is the nickname
    assert english(result.personas[0].report.source_format) == "character card V3 (JSON)"


def test_constant_lorebook_entries_are_pinned_in_the_system_prompt_and_others_warned() -> None:
    book = {
        "entries": [
            {
                "keys": [],
                "content": "The tavern is the Prancing Pony.",
                "constant": True,
                "insertion_order": 2,
            },
            {"keys": [], "content": "Disabled.", "constant": True, "enabled": False},
            {"keys": ["sword"], "content": "Her sword is Dawn.", "constant": False},
        ]
    }
    result = import_file("aria.json", json.dumps(v2_card(character_book=book)).encode())
    persona = only(result)
    assert persona.system_prompt.endswith("Scenario: A crowded tavern.\n\nThe tavern is the Prancing Pony.")
    assert "Disabled." not in persona.system_prompt and "Dawn" not in persona.system_prompt
    assert [w.fields for w in result.personas[0].report.warnings if w.code == "import_warn_lorebook"] == [
        {"count": 1}
    ]
    kept_book = persona.extensions["character_card"]["character_book"]  # type: ignore[index, call-overload]
    assert [e["content"] for e in kept_book["entries"]] == ["Disabled.", "Her sword is Dawn."]


def test_a_png_card_prefers_ccv3_and_its_picture_becomes_the_avatar() -> None:
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {**v2_card()["data"], "name": "Three"}}
    data = png_with_text(picture(600, 300), chara=b64json(v2_card()), ccv3=b64json(v3))
    result = import_file("card.png", data)
    persona = only(result)
    assert persona.name == "Three"
    assert persona.avatar_image is not None
    with Image.open(io.BytesIO(base64.b64decode(persona.avatar_image))) as image:
        assert image.size == (256, 128) and image.getpixel((5, 5)) == (30, 120, 200)
        assert "ccv3" not in image.info  # the card is not copied into the avatar
    assert english(result.personas[0].report.source_format) == "character card V3 (PNG, 'ccv3' chunk)"
    chara_only = only(import_file("card.png", png_with_text(picture(), chara=b64json(v2_card()))))
    assert chara_only.name == "Aria"


def test_a_charx_reads_card_json_and_its_icon() -> None:
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            **v2_card()["data"],
            "assets": [
                {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}
            ],
        },
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("card.json", json.dumps(v3))
        archive.writestr("assets/icon/images/main.png", picture(32, 32, (250, 10, 10)))
    persona = only(import_file("aria.charx", out.getvalue()))
    assert persona.avatar_image is not None
    with Image.open(io.BytesIO(base64.b64decode(persona.avatar_image))) as image:
        assert image.size == (32, 32) and image.getpixel((0, 0)) == (250, 10, 10)


# --- Other tools -----------------------------------------------------------------------------


def test_a_lobehub_agent_maps_and_keeps_the_rest() -> None:
    agent = {
        "author": "someone",
        "identifier": "chef",
        "schemaVersion": 1,
        "meta": {
            "title": "Chef",
            "avatar": "👨‍🍳",
            "description": "Cooks.",
            "tags": ["food"],
            "category": "life",
        },
        "config": {
            "systemRole": "You are a chef.",
            "model": "gpt-4o",
            "params": {"temperature": 0.6, "max_tokens": 800, "top_p": 7},
            "openingMessage": "Hungry?",
            "openingQuestions": ["What can I cook with eggs?"],
            "chatConfig": {"historyCount": 8},
        },
        "examples": [
            {"role": "user", "content": "Pasta?"},
            {"role": "assistant", "content": "Boil water."},
            {"role": "system", "content": "ignored"},
        ],
    }
    result = import_file("chef.json", json.dumps(agent).encode())
    persona = only(result)
    assert (persona.id, persona.name, persona.avatar, persona.model) == ("chef", "Chef", "👨‍🍳", "gpt-4o")
    assert persona.sampling.temperature == 0.6 and persona.sampling.top_p is None
    assert persona.max_reply_tokens == 800 and persona.greeting == "Hungry?"
    assert persona.starter_prompts == ["What can I cook with eggs?"]
    assert [e.content for e in persona.examples] == ["Pasta?", "Boil water."]
    dropped = {d.theirs: english(d.reason) for d in result.personas[0].report.dropped}
    assert dropped["config.params.top_p"] == "7 is outside top_p's range 0-1"
    assert "counts messages, not tokens" in dropped["config"]
    assert persona.extensions["lobehub"] == {
        "author": "someone",
        "meta": {"category": "life"},
        "config": {"chatConfig": {"historyCount": 8}},
    }


def test_a_nextchat_mask_list_gives_one_persona_each() -> None:
    masks = [
        {
            "avatar": "1f638",
            "name": "Cat",
            "context": [
                {"role": "system", "content": "You are a cat."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Meow"},
            ],
            "modelConfig": {"model": "gpt-4o-mini", "temperature": 1, "historyMessageCount": 4},
            "lang": "en",
        },
        {"avatar": "gpt-bot", "name": "Plain", "context": [{"role": "user", "content": "Be terse."}]},
    ]
    result = import_file("masks.json", json.dumps(masks).encode())
    assert result.error is None
    cat, plain = (p.persona for p in result.personas)
    assert (cat.avatar, cat.system_prompt, cat.sampling.temperature) == ("😸", "You are a cat.", 1.0)
    assert [(e.role, e.content) for e in cat.examples] == [("user", "Hi"), ("assistant", "Meow")]
    assert plain.system_prompt == "You are Plain." and plain.avatar == "🤖"
    assert any("no system prompt" in english(w) for w in result.personas[1].report.warnings)


def test_an_open_webui_export_maps_budget_prompts_and_a_data_url_picture() -> None:
    data_url = "data:image/png;base64," + base64.b64encode(picture(40, 40)).decode()
    models = [
        {
            "id": "helper",
            "base_model_id": "llama3.1:8b",
            "name": "Helper",
            "meta": {
                "profile_image_url": data_url,
                "description": "Helps.",
                "suggestion_prompts": [{"content": "Start here"}],
                "tags": [{"name": "work"}],
                "capabilities": {"vision": True},
            },
            "params": {"system": "You help.", "num_ctx": 16384, "temperature": 0.2, "seed": 7},
        }
    ]
    persona = only(import_file("models.json", json.dumps(models).encode()))
    assert (persona.model, persona.context_budget, persona.sampling.seed) == ("llama3.1:8b", 16384, 7)
    assert persona.starter_prompts == ["Start here"] and persona.tags == ["work"]
    assert persona.avatar_image is not None
    assert persona.extensions["open_webui"] == {"meta": {"capabilities": {"vision": True}}}


def test_librechat_model_specs_give_one_persona_per_spec() -> None:
    text = """\
version: 1.2.1
endpoints: {custom: []}
modelSpecs:
  enforce: false
  list:
    - name: tutor
      label: Math Tutor
      description: Patient math help.
      group: school
      preset:
        endpoint: openAI
        model: gpt-4.1-mini
        promptPrefix: You teach math step by step.
        temperature: 0.3
        maxContextTokens: 32000
        max_tokens: 900
        greeting: Which problem?
        examples:
          - input: {content: "2+2?"}
            output: {content: "4."}
    - name: poet
      label: Poet
      iconURL: https://example.com/poet.png
      preset: {endpoint: openAI, model: gpt-4o, promptPrefix: You write short poems.}
"""
    result = import_file("librechat.yaml", text.encode())
    assert result.error is None
    tutor, poet = (p.persona for p in result.personas)
    assert (tutor.id, tutor.name, tutor.context_budget, tutor.max_reply_tokens) == (
        "tutor",
        "Math Tutor",
        32000,
        900,
    )
    assert tutor.greeting == "Which problem?" and tutor.tags == ["school"]
    assert [(e.role, e.content) for e in tutor.examples] == [("user", "2+2?"), ("assistant", "4.")]
    assert tutor.extensions["librechat"] == {"name": "tutor", "preset": {"endpoint": "openAI"}}
    assert poet.avatar_image is None
    assert any("never fetched" in english(d.reason) for d in result.personas[1].report.dropped)


def test_this_apps_own_yaml_imports_too() -> None:
    text = (BUNDLED_PERSONAS_DIR / "foodie.yaml").read_text(encoding="utf-8")
    result = import_file("foodie.yaml", text.encode())
    assert only(result) == load_personas(BUNDLED_PERSONAS_DIR).personas["foodie"]
    assert result.personas[0].report.system_tokens > 0


def test_a_system_prompt_over_half_the_budget_is_warned() -> None:
    card = v2_card(description="word " * 3000)
    card["data"]["extensions"] = {"persona_dashboard": {"context_budget": 4096}}
    result = import_file("big.json", json.dumps(card).encode())
    report = result.personas[0].report
    assert report.budget_warning and report.budget_share > 0.5
    assert any("leaving little room" in english(w) for w in report.warnings)


# --- Round trips -----------------------------------------------------------------------------


def rich_persona() -> Persona:
    return Persona.model_validate(
        {
            "id": "rich",
            "name": "Rich 人物",
            "avatar": "🧪",
            "description": "Every field, <script>alert(1)</script> kept as text.",
            "system_prompt": "You are rich.\n\nLine <b>two</b> with {braces}.",
            "model": "gpt-4.1",
            "sampling": {"temperature": 0.4, "top_p": 0.9, "seed": 3},
            "context_budget": 12000,
            "max_reply_tokens": 700,
            "greeting": "Hello!\nTwo lines.",
            "starter_prompts": ["One", "Two\nlines"],
            "tags": ["a", "标签"],
            "context_policy": "summarize",
            "summarizer_model": "gpt-4o-mini",
            "examples": [
                {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "A.\nMore."},
                {"role": "assistant", "content": "Second answer."},
            ],
            "avatar_image": encode_avatar(avatar_png(picture(300, 200))),
            "extensions": {
                "character_card": {"creator": "x", "extensions": {"fav": True}},
                "lobehub": {"author": "y", "meta": {"category": "life"}},
                "nextchat": {"lang": "en"},
            },
        }
    )


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize("with_image", [True, False])
def test_every_export_imports_back_to_the_same_persona(export_format: Any, with_image: bool) -> None:
    persona = rich_persona() if with_image else rich_persona().model_copy(update={"avatar_image": None})
    exported = export_persona(persona, export_format)
    assert only(import_file(exported.file_name, exported.data)) == persona


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
def test_every_shipped_persona_round_trips_through_every_export(export_format: Any) -> None:
    for persona in load_personas(BUNDLED_PERSONAS_DIR).personas.values():
        exported = export_persona(persona, export_format)
        assert (
            only(import_file(f"{persona.id}.{exported.file_name.rsplit('.', 1)[1]}", exported.data))
            == persona
        )


def test_the_card_png_carries_v3_and_v2_and_reads_elsewhere() -> None:
    data = card_png(rich_persona())
    chunks = png_text_chunks(data)
    v3 = json.loads(base64.b64decode(chunks["ccv3"]))
    v2 = json.loads(base64.b64decode(chunks["chara"]))
    assert (v3["spec"], v2["spec"]) == ("chara_card_v3", "chara_card_v2")
    assert v3["data"]["description"] == rich_persona().system_prompt
    assert v3["data"]["mes_example"].startswith("<START>\n{{user}}: Q?\n{{char}}: A.\nMore.")
    assert "assets" not in v2["data"] and v3["data"]["assets"][0]["uri"] == "ccdefault:"
    assert v3["data"]["extensions"]["fav"] is True  # a kept card extension is given back
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # still a valid picture for any viewer


def test_an_imported_persona_saves_as_a_valid_yaml_file() -> None:
    persona = only(import_file("aria.json", json.dumps(v2_card()).encode()))
    assert parse_persona(persona_yaml(persona), persona.id) == persona


def test_ids_are_unique_across_files_and_against_existing_ones() -> None:
    card = json.dumps(v2_card()).encode()
    results = import_files([("a.json", card), ("b.json", card)], taken_ids={"aria"})
    assert [r.personas[0].persona.id for r in results] == ["aria-2", "aria-3"]


# --- Bad input -------------------------------------------------------------------------------


def deep_json(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return out.getvalue()


def corrupt_png() -> bytes:
    data = bytearray(png_with_text(picture(), chara=b64json(v2_card())))
    data[40] ^= 0xFF  # inside IHDR/IDAT: a checksum now fails
    return bytes(data)


BAD_FILES: list[tuple[str, bytes, str]] = [
    ("huge.json", b" " * (MAX_IMPORT_BYTES + 1), "imports read files of at most 8 MiB"),
    ("broken.png", corrupt_png(), "is a damaged PNG"),
    ("cut.png", png_with_text(picture(), chara=b64json(v2_card()))[:-20], "damaged PNG"),
    ("plain.png", picture(), "no character card in it"),
    ("badb64.png", png_with_text(picture(), chara="!!!not base64!!!"), "'chara' chunk is not valid base64"),
    ("notjson.png", png_with_text(picture(), chara=base64.b64encode(b"{oops").decode()), "is not valid JSON"),
    ("invalid.json", b'{"spec": "chara_card_v2", "data": {', "is not valid JSON"),
    ("deep.json", deep_json(150_000), "JSON objects and lists"),
    ("deep2.json", deep_json(5_000), "nested more than 64 levels"),
    ("wide.json", b"[" + b"[]," * 200_000 + b"[]]", "JSON objects and lists"),
    ("bignum.json", b'{"name": 1' + b"0" * 5000 + b"}", "is not valid JSON"),
    ("unknown.json", b'{"hello": "world"}', "in no format this app reads"),
    ("v9.json", b'{"spec": "chara_card_v9", "data": {}}', "spec 'chara_card_v9'"),
    ("notutf8.json", b'{"name": "\xff"}', "not UTF-8"),
    ("nocard.charx", zip_of({"readme.txt": b"hi"}), "no card.json"),
    ("escape.charx", zip_of({"card.json": b"{}", "../../evil.txt": b"x"}), "outside the archive"),
    ("many.charx", zip_of({f"f{i}": b"" for i in range(300)}), "at most 256"),
    ("notzip.charx", b"PK\x03\x04 not really", "not a valid .charx"),
    ("anchors.yaml", b"a: &x [1]\nb: *x\n", "anchors and aliases"),
    ("nospecs.yaml", b"version: 1\n", "no modelSpecs.list"),
    ("empty.json", b"   ", "is empty"),
    ("noname.json", json.dumps({"spec": "chara_card_v2", "data": {"description": "x"}}).encode(), "no name"),
    (
        "longprompt.json",
        json.dumps(v2_card(description="x" * 25_000)).encode(),
        "a prompt is not cut",
    ),
]


def zip_bomb() -> bytes:
    """A card.json that declares a small size but unpacks to 64 MiB of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", b"0" * (64 * 1024 * 1024))
    return out.getvalue()


def test_a_zip_bomb_is_refused_before_it_unpacks() -> None:
    result = import_file("bomb.charx", zip_bomb())
    assert result.error is not None and "unpacks to 64 MiB" in str(result.error)


@pytest.mark.parametrize(("file_name", "data", "problem"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_fails_alone_with_a_clear_error(file_name: str, data: bytes, problem: str) -> None:
    good = json.dumps(v2_card()).encode()
    results = import_files([("first.json", good), (file_name, data), ("last.json", good)])
    assert [len(r.personas) for r in results] == [1, 0, 1]
    error = results[1].error
    assert error is not None and error.file_name == file_name
    assert problem in str(error), str(error)


def test_html_and_scripts_stay_text() -> None:
    hostile = "<script>alert('x')</script><img src=https://example.com/t.png onerror=alert(1)>"
    persona = only(
        import_file("h.json", json.dumps(v2_card(name="<b>Bold</b>", description=hostile)).encode())
    )
    assert persona.name == "<b>Bold</b>" and hostile in persona.system_prompt


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request (none is expected)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(picture())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_remote_image_urls_are_never_fetched(counting_server: tuple[str, list[str]]) -> None:
    url, hits = counting_server
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {**v2_card()["data"], "assets": [{"type": "icon", "uri": f"{url}/icon.png", "name": "main"}]},
    }
    agent = {"meta": {"title": "A", "avatar": f"{url}/a.png"}, "config": {"systemRole": "x"}}
    models = [{"id": "m", "name": "M", "base_model_id": "x", "meta": {"profile_image_url": f"{url}/m.png"}}]
    results = import_files(
        [
            ("v3.json", json.dumps(v3).encode()),
            ("agent.json", json.dumps(agent).encode()),
            ("models.json", json.dumps(models).encode()),
        ]
    )
    for result in results:
        imported = result.personas[0]
        assert imported.persona.avatar_image is None
        assert any("never fetched" in english(d.reason) for d in imported.report.dropped)
    assert hits == []


# --- Command line ----------------------------------------------------------------------------


def test_the_command_line_exports_and_imports(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from core.personas.persona import main

    source = BUNDLED_PERSONAS_DIR / "foodie.yaml"
    for export_format in EXPORT_FORMATS:
        assert main(["export", str(source), "--format", export_format, "--out", str(tmp_path / "x")]) == 0
    exported = sorted((tmp_path / "x").iterdir())
    assert [p.name for p in exported] == ["foodie.card.json", "foodie.lobehub.json", "foodie.png"]
    (tmp_path / "bad.png").write_bytes(picture())
    out = tmp_path / "personas"
    code = main(
        ["import", *map(str, exported), str(tmp_path / "bad.png"), "--out", str(out), "--user-name", "Kim"]
    )
    printed = capsys.readouterr().out
    assert code == 1  # one file failed; the others were written
    assert "error  bad.png: is a PNG with no character card in it" in printed
    assert "format: character card V3 (PNG, 'ccv3' chunk)" in printed and "tokens   system message" in printed
    catalog = load_personas(out)
    foodie = load_personas(BUNDLED_PERSONAS_DIR).personas["foodie"]
    assert sorted(catalog.personas) == ["foodie", "foodie-2", "foodie-3"] and not catalog.errors
    assert all(p.model_copy(update={"id": "foodie"}) == foodie for p in catalog.personas.values())
    assert main([str(BUNDLED_PERSONAS_DIR)]) == 0  # checking a folder still works


def test_a_card_in_a_decompression_bomb_imports_without_its_picture() -> None:
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    card = chunk(b"tEXt", b"chara\0" + b64json(v2_card()).encode())
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + card + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    result = import_file("bomb.png", bomb + chunk(b"IEND", b""))
    persona = only(result)
    assert persona.name == "Aria" and persona.avatar_image is None
    reasons = {d.theirs: english(d.reason) for d in result.personas[0].report.dropped}
    assert "declares too many pixels" in reasons["PNG"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    suffix=st.sampled_from(["json", "png", "charx", "yaml"]),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=4000), st.integers(1, 255)), max_size=4),
)
def test_damaged_files_always_get_an_answer(suffix: str, cut: int, flips: list[tuple[int, int]]) -> None:
    """Any cut or bit-flipped version of a valid file gives personas or one error, never a crash."""
    valid = {
        "json": json.dumps(v2_card()).encode(),
        "png": png_with_text(picture(), chara=b64json(v2_card())),
        "charx": zip_of({"card.json": json.dumps(v2_card()).encode()}),
        "yaml": (BUNDLED_PERSONAS_DIR / "foodie.yaml").read_bytes(),
    }[suffix]
    data = bytearray(valid[: cut or len(valid)])
    for position, mask in flips:
        if data:
            data[position % len(data)] ^= mask
    result = import_file(f"x.{suffix}", bytes(data))
    assert (result.error is None) == bool(result.personas)
    if result.error is not None:
        assert result.error.problems and "could not be imported" not in str(result.error), str(result.error)


def test_lobechats_own_export_of_its_agents_gives_one_persona_each() -> None:
    agent = json.loads(export_persona(rich_persona(), "lobehub").data)
    other = {
        "meta": {"title": "Second"},
        "config": {"systemRole": "You are second."},
        "id": "s2",
        "type": "agent",
    }
    exported = {
        "exportType": "agents",
        "state": {"sessions": [agent, other], "sessionGroups": []},
        "version": 7,
    }
    result = import_file("lobechat-agents.json", json.dumps(exported).encode())
    assert result.error is None
    first, second = (p.persona for p in result.personas)
    assert first == rich_persona()
    assert second.name == "Second" and second.extensions["lobehub"] == {"id": "s2", "type": "agent"}
