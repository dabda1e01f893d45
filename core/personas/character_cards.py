"""Character cards (SillyTavern, TavernAI, RisuAI, chub): V1, V2 and V3, as JSON, PNG or `.charx`.

- JSON: V2 and V3 wrap the card as `{"spec": "chara_card_v2" | "chara_card_v3", "spec_version",
  "data": {...}}`; V1 is the flat object (`name`, `description`, `personality`, `scenario`,
  `first_mes`, `mes_example`).
- PNG: the card is a `tEXt` chunk named `ccv3` (V3, preferred) or `chara` (V2/V1) whose text is
  base64 of the UTF-8 JSON; the picture becomes the persona's avatar.
- `.charx`: a zip holding `card.json` (V3) and its assets, referenced as `embeded://path` (sic).

A card's system prompt is its `system_prompt`, `description`, `personality` and `scenario` (in
SillyTavern's order), with `{{char}}` and `{{user}}` replaced, and the content of the lorebook's
constant entries after them. `mes_example` becomes few-shot examples. What a persona cannot use
(post-history instructions, other greetings, keyword-triggered lorebook entries, tool-specific
extensions) is kept under `extensions.character_card`, and the persona's own settings travel in
`data.extensions.persona_dashboard`, so `import(export(persona)) == persona`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, Final

from PIL import Image

from core.notices import Notice
from core.personas.avatars import PNG_SIGNATURE, decode_avatar
from core.personas.mapping import (
    MAX_JSON_BYTES,
    ImportedPersona,
    ImportProblem,
    PersonaBuilder,
    dashboard_block,
    kept_fields,
    persona_id_from,
    read_json,
    shown_value,
    substitute_macros,
)
from core.personas.persona import Persona

__all__ = ["card_json", "card_png", "card_v3", "import_card_json", "import_card_png", "import_charx"]

CARD_V2: Final = "chara_card_v2"
CARD_V3: Final = "chara_card_v3"
EXTENSION_KEY: Final = "character_card"  # under the persona's `extensions`
#: Cards of V1 have no `spec`; these keys (beside `name`) make an object one.
V1_KEYS: Final = ("description", "personality", "scenario", "first_mes", "mes_example")
MAX_PNG_CHUNKS: Final = 10_000
MAX_CHARX_ENTRIES: Final = 256
MAX_CHARX_BYTES: Final = 32 * 1024 * 1024  # all entries, uncompressed
MAX_ASSET_BYTES: Final = 8 * 1024 * 1024
_V3_ONLY = ("assets", "nickname", "creator_notes_multilingual", "source", "group_only_greetings")
_V3_ONLY_DATES = ("creation_date", "modification_date")
_USED = (
    "spec",
    "spec_version",
    "data.name",
    "data.description",
    "data.personality",
    "data.scenario",
    "data.system_prompt",
    "data.first_mes",
    "data.mes_example",
    "data.creator_notes",
    "data.tags",
    "data.character_book",
    "data.extensions.persona_dashboard",
    "data.assets",
)
_REASONS = {
    "post_history_instructions": Notice(code="import_drop_post_history"),
    "alternate_greetings": Notice(code="import_drop_alternate_greetings"),
    "group_only_greetings": Notice(code="import_drop_group_greetings"),
    "extensions.depth_prompt": Notice(code="import_drop_depth_prompt"),
}
_PLACEHOLDER_COLOUR = (96, 110, 140)
#: What a card has no field for: it travels in data.extensions.persona_dashboard.
_CARD_BLOCK_KEYS = (
    "id",
    "avatar",
    "model",
    "sampling",
    "context_budget",
    "max_reply_tokens",
    "context_policy",
    "summarizer_model",
    "starter_prompts",
    "has_avatar_image",
    "extensions",
)


# --- Import ----------------------------------------------------------------------------------


def import_card_json(file_name: str, data: bytes, *, user_name: str) -> ImportedPersona:
    card = read_json(data)
    return _import_card(file_name, card, Notice(code="import_format_card_json"), user_name=user_name)


def import_card_png(file_name: str, data: bytes, *, user_name: str) -> ImportedPersona:
    chunks = png_text_chunks(data)
    keyword = "ccv3" if "ccv3" in chunks else "chara" if "chara" in chunks else None
    if keyword is None:
        raise ImportProblem(Notice(code="import_png_no_card"))
    try:
        raw = base64.b64decode(b"".join(chunks[keyword].split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImportProblem(Notice(code="import_chunk_not_base64", fields={"chunk": keyword})) from None
    card = read_json(raw, Notice(code="import_what_chunk", fields={"chunk": keyword}))
    return _import_card(
        file_name,
        card,
        Notice(code="import_format_card_png", fields={"chunk": keyword}),
        user_name=user_name,
        picture=data,
    )


def import_charx(file_name: str, data: bytes, *, user_name: str) -> ImportedPersona:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ImportProblem(Notice(code="import_charx_not_zip")) from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_CHARX_ENTRIES:
            raise ImportProblem(
                Notice(
                    code="import_charx_entries", fields={"count": len(entries), "limit": MAX_CHARX_ENTRIES}
                )
            )
        for entry in entries:
            if _unsafe_path(entry.filename):
                raise ImportProblem(Notice(code="import_charx_outside", fields={"name": entry.filename}))
        declared = sum(entry.file_size for entry in entries)
        if declared > MAX_CHARX_BYTES:
            raise ImportProblem(
                Notice(
                    code="import_charx_too_large",
                    fields={"size": round(declared / 1024 / 1024), "limit": MAX_CHARX_BYTES // 1024 // 1024},
                )
            )
        names = {entry.filename: entry for entry in entries}
        if "card.json" not in names:
            raise ImportProblem(Notice(code="import_charx_no_card"))

        def read(name: str, limit: int) -> bytes:
            entry = names[name]
            try:
                with archive.open(entry) as handle:
                    body = handle.read(limit + 1)  # the real size, whatever the header declared
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                NotImplementedError,
                EOFError,
                zlib.error,
            ) as exc:
                raise ImportProblem(
                    Notice(code="import_charx_unpack", fields={"name": name, "problem": str(exc)})
                ) from None
            if len(body) > limit:
                raise ImportProblem(
                    Notice(
                        code="import_charx_entry_too_large",
                        fields={"name": name, "limit": limit // 1024 // 1024},
                    )
                )
            return body

        card = read_json(read("card.json", MAX_JSON_BYTES), Notice(code="import_what_card_json"))

        def asset(uri: str) -> bytes | None:
            path = uri.removeprefix("embeded://").removeprefix("embedded://")
            return read(path, MAX_ASSET_BYTES) if path in names else None

        return _import_card(
            file_name, card, Notice(code="import_format_card_charx"), user_name=user_name, asset=asset
        )


def _unsafe_path(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", name))


def png_text_chunks(data: bytes) -> dict[str, bytes]:
    """The PNG's `tEXt` chunks (keyword -> text); raises `ImportProblem` for a damaged PNG.
    Every chunk's CRC is checked, so a cut or corrupted file is named as such."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImportProblem(Notice(code="import_not_png"))
    chunks: dict[str, bytes] = {}
    position, count = len(PNG_SIGNATURE), 0
    while True:
        if position + 12 > len(data):
            raise ImportProblem(Notice(code="import_png_cut_short"))
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 8 + length
        if end + 4 > len(data):
            raise ImportProblem(
                Notice(code="import_png_chunk_past_end", fields={"chunk": kind.decode("latin-1")})
            )
        body = data[position + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + body) != crc:
            raise ImportProblem(Notice(code="import_png_checksum", fields={"chunk": kind.decode("latin-1")}))
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            chunks.setdefault(keyword.decode("latin-1"), text)
        if kind == b"IEND":
            return chunks
        position, count = end + 4, count + 1
        if count > MAX_PNG_CHUNKS:
            raise ImportProblem(Notice(code="import_png_chunks", fields={"limit": MAX_PNG_CHUNKS}))


def _import_card(
    file_name: str,
    card: Any,
    container: Notice,
    *,
    user_name: str,
    picture: bytes | None = None,
    asset: Callable[[str], bytes | None] | None = None,
) -> ImportedPersona:
    if not isinstance(card, dict):
        raise ImportProblem(Notice(code="import_card_not_object"))
    spec = card.get("spec")
    if spec in (CARD_V2, CARD_V3):
        data = card.get("data")
        if not isinstance(data, dict):
            raise ImportProblem(Notice(code="import_card_no_data", fields={"spec": spec}))
        version = "V3" if spec == CARD_V3 else "V2"
        wrapped = card
    elif spec is None and "name" in card and any(key in card for key in V1_KEYS):
        data, version, wrapped = card, "V1", {"data": card}
    elif spec is not None:
        raise ImportProblem(Notice(code="import_card_spec", fields={"spec": str(spec)[:60]}))
    else:
        raise ImportProblem(Notice(code="import_not_card"))
    source_format = Notice(code=container.code, fields={**container.fields, "version": version})
    builder = PersonaBuilder(file_name, source_format, user_name=user_name)
    ours = _our_block(data)
    char = data.get("nickname") if isinstance(data.get("nickname"), str) and data.get("nickname") else None
    name = data.get("name")
    builder.text("name", "data.name" if version != "V1" else "name", name)
    char = char or (name if isinstance(name, str) else "") or "the character"

    def macros(value: Any) -> Any:
        return substitute_macros(value, char, builder.user_name) if isinstance(value, str) else value

    prefix = "" if version == "V1" else "data."
    _system_prompt(builder, data, prefix, char, macros)
    builder.text("greeting", f"{prefix}first_mes", macros(data.get("first_mes")))
    builder.text("description", f"{prefix}creator_notes", data.get("creator_notes"))
    builder.text_list("tags", f"{prefix}tags", data.get("tags"))
    if isinstance(data.get("mes_example"), str) and data["mes_example"].strip():
        builder.examples(f"{prefix}mes_example", parse_mes_example(data["mes_example"], macros))
    builder.settings_block(f"{prefix}extensions.persona_dashboard", ours)
    if ours.get("has_avatar_image") is not False:
        _picture(builder, data, picture, asset)
    kept = kept_fields(wrapped, _USED)
    copies = [key for key in kept if key != "data"]
    if copies:  # SillyTavern repeats V1 fields beside `data` for old readers
        builder.drop(
            ", ".join(copies[:6]) + (", …" if len(copies) > 6 else ""),
            Notice(code="import_drop_outside_data"),
        )
    kept_data = dict(kept.get("data") or {})
    book = _kept_book(data.get("character_book"))
    if book:
        kept_data["character_book"] = book
    other_assets = [a for a in data.get("assets") or [] if isinstance(a, dict) and a.get("type") != "icon"]
    if other_assets:
        kept_data["assets"] = other_assets
    if version == "V1":
        kept_data = {k: v for k, v in kept_data.items() if k not in V1_KEYS}
    builder.keep(EXTENSION_KEY, kept_data, reasons=_REASONS)
    persona_id = persona_id_from(builder.suggested_id, str(name or ""), file_name.rsplit(".", 1)[0])
    return builder.build(persona_id, default_avatar="🎭")


def _our_block(data: dict[str, Any]) -> dict[str, Any]:
    extensions = data.get("extensions")
    block = extensions.get("persona_dashboard") if isinstance(extensions, dict) else None
    return block if isinstance(block, dict) else {}


def _system_prompt(
    builder: PersonaBuilder, data: dict[str, Any], prefix: str, char: str, macros: Callable[[Any], Any]
) -> None:
    """system_prompt, description, personality and scenario, then the lorebook's constant entries."""
    parts: list[str] = []
    sources: list[str] = []
    for key, framing in (
        ("system_prompt", "{}"),
        ("description", "{}"),
        ("personality", f"{char}'s personality: {{}}"),
        ("scenario", "Scenario: {}"),
    ):
        value = macros(data.get(key))
        if isinstance(value, str) and value.strip():
            parts.append(framing.format(value.strip()))
            sources.append(prefix + key)
        elif value not in (None, ""):
            builder.drop(
                prefix + key, Notice(code="import_drop_not_text", fields={"value": shown_value(value)})
            )
    book = data.get("character_book")
    entries = book.get("entries") if isinstance(book, dict) else None
    if isinstance(entries, list):
        constant = [e for e in entries if _constant(e)]
        constant.sort(
            key=lambda e: e.get("insertion_order", 0) if isinstance(e.get("insertion_order"), int) else 0
        )
        for entry in constant:
            parts.append(str(macros(entry["content"])).strip())
        if constant:
            sources.append(f"{len(constant)} constant lorebook entries")
        others = sum(
            1 for e in entries if isinstance(e, dict) and not _constant(e) and e.get("enabled", True)
        )
        if others:
            builder.warn(Notice(code="import_warn_lorebook", fields={"count": others}))
    if parts:
        builder.text("system_prompt", " + ".join(sources), "\n\n".join(parts))


def _constant(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("constant") is True
        and entry.get("enabled", True) is not False
        and isinstance(entry.get("content"), str)
        and bool(entry["content"].strip())
    )


def _kept_book(book: Any) -> dict[str, Any] | None:
    """The lorebook without its constant entries (they are in the system prompt now)."""
    if not isinstance(book, dict):
        return None
    entries = [e for e in book.get("entries") or [] if not _constant(e)]
    kept = {k: v for k, v in book.items() if k != "entries" and v not in ("", [], {}, None)}
    if entries:
        kept["entries"] = entries
    return kept if entries else None


def _picture(
    builder: PersonaBuilder,
    data: dict[str, Any],
    picture: bytes | None,
    asset: Callable[[str], bytes | None] | None,
) -> None:
    """The card's icon: V3's main icon asset, else the PNG the card came in."""
    icons = [a for a in data.get("assets") or [] if isinstance(a, dict) and a.get("type") == "icon"]
    icons.sort(key=lambda a: a.get("name") != "main")
    for icon in icons:
        uri = icon.get("uri")
        if not isinstance(uri, str) or uri == "ccdefault:":
            continue
        if uri.startswith(("embeded://", "embedded://")):
            body = asset(uri) if asset else None
            if body is None:
                builder.drop(
                    "data.assets (icon)", Notice(code="import_drop_asset_missing", fields={"uri": uri})
                )
                continue
            builder.image(f"data.assets (icon {uri})", body)
        else:
            builder.image_url("data.assets (icon)", uri)
        return
    if picture is not None:
        builder.image("PNG", picture)


def parse_mes_example(text: str, macros: Callable[[Any], Any]) -> list[tuple[str, str]]:
    """`mes_example` as (role, text) messages: `<START>` separates blocks; a line starting with
    `{{user}}:` or `{{char}}:` starts a message, other lines continue it."""
    messages: list[tuple[str, str]] = []
    speaker = re.compile(r"^\s*(\{\{\s*user\s*\}\}|<user>|\{\{\s*char\s*\}\}|<bot>)\s*:\s?", re.IGNORECASE)
    for block in re.split(r"<start>", text, flags=re.IGNORECASE):
        current: tuple[str, list[str]] | None = None
        for line in block.splitlines():
            match = speaker.match(line)
            if match:
                if current:
                    messages.append((current[0], "\n".join(current[1])))
                role = "user" if "user" in match.group(1).lower() else "assistant"
                current = (role, [line[match.end() :]])
            elif current:
                current[1].append(line)
        if current:
            messages.append((current[0], "\n".join(current[1])))
    return [(role, str(macros(content)).strip()) for role, content in messages]


# --- Export ----------------------------------------------------------------------------------


def card_v3(persona: Persona, *, icon_uri: str | None = None) -> dict[str, Any]:
    """The persona as a V3 card. The system prompt goes in `description` (the field every tool
    reads); the persona's own settings in `data.extensions.persona_dashboard`."""
    kept: dict[str, Any] = dict(persona.extensions.get(EXTENSION_KEY) or {})  # type: ignore[arg-type]
    data: dict[str, Any] = {
        "name": persona.name,
        "description": persona.system_prompt,
        "personality": "",
        "scenario": "",
        "first_mes": persona.greeting,
        "mes_example": mes_example(persona.examples),
        "creator_notes": persona.description,
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": list(persona.tags),
        "creator": "",
        "character_version": "",
        "extensions": {
            **(kept.pop("extensions", None) or {}),
            "persona_dashboard": dashboard_block(persona, keys=_CARD_BLOCK_KEYS, skip=EXTENSION_KEY),
        },
        "group_only_greetings": [],
        "assets": [],
    }
    if icon_uri is None and persona.avatar_image:
        icon_uri = "data:image/png;base64," + persona.avatar_image
    if icon_uri is not None:
        data["assets"].append({"type": "icon", "uri": icon_uri, "name": "main", "ext": "png"})
    data["assets"].extend(kept.pop("assets", None) or [])
    for key, value in kept.items():
        if data.get(key) in (None, "", []):
            data[key] = value
    return {"spec": CARD_V3, "spec_version": "3.0", "data": data}


def card_json(persona: Persona) -> bytes:
    return json.dumps(card_v3(persona), ensure_ascii=False, indent=2).encode()


def card_png(persona: Persona) -> bytes:
    """The persona's picture (a plain square when it has none) carrying the card twice, as most
    tools write it: `ccv3` (V3) and `chara` (the V2 form, for older readers)."""
    if persona.avatar_image:
        picture = decode_avatar(persona.avatar_image)
    else:
        out = io.BytesIO()
        Image.new("RGB", (256, 256), _PLACEHOLDER_COLOUR).save(out, format="PNG", optimize=True)
        picture = out.getvalue()
    v3 = card_v3(persona, icon_uri="ccdefault:")
    v2_data = {k: v for k, v in v3["data"].items() if k not in _V3_ONLY + _V3_ONLY_DATES}
    v2 = {"spec": CARD_V2, "spec_version": "2.0", "data": v2_data}
    return with_text_chunks(picture, {"chara": _b64json(v2), "ccv3": _b64json(v3)})


def _b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value, ensure_ascii=False).encode()).decode("ascii")


def with_text_chunks(png: bytes, texts: dict[str, str]) -> bytes:
    """`png` with these `tEXt` chunks before IEND (replacing chunks of the same keywords)."""
    out = [png[: len(PNG_SIGNATURE)]]
    position = len(PNG_SIGNATURE)
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        chunk = png[position : position + 12 + length]
        position += 12 + length
        if (
            kind == b"tEXt"
            and png[position - 4 - length : position - 4].split(b"\0", 1)[0].decode("latin-1") in texts
        ):
            continue
        if kind == b"IEND":
            for keyword, text in texts.items():
                body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
                out.append(
                    struct.pack(">I", len(body))
                    + b"tEXt"
                    + body
                    + struct.pack(">I", zlib.crc32(b"tEXt" + body))
                )
        out.append(chunk)
    return b"".join(out)


def mes_example(examples: Any) -> str:
    """Few-shot examples as one `<START>` block of `{{user}}:` / `{{char}}:` lines."""
    if not examples:
        return ""
    lines = ["<START>"]
    for example in examples:
        lines.append(("{{user}}: " if example.role == "user" else "{{char}}: ") + example.content)
    return "\n".join(lines) + "\n"
