"""The persona fields that imports fill: few-shot examples (sent in the system message and counted),
an avatar image (a small PNG, never a URL) and extensions kept for exports."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from core.chat.session import ChatSession
from core.counting.tokens import tokenizer_for
from core.errors import PersonaFileError
from core.personas.avatars import (
    MAX_AVATAR_SIDE,
    AvatarImageError,
    avatar_from_data_url,
    avatar_png,
    encode_avatar,
)
from core.personas.persona import (
    EXAMPLES_HEADING,
    Example,
    Persona,
    chat_avatar,
    examples_from_text,
    examples_text,
    parse_persona,
    persona_yaml,
    system_message,
)
from core.providers.offline import OfflineBackend


def png(width: int, height: int, colour: tuple[int, int, int, int] = (200, 30, 30, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def persona(**changes: object) -> Persona:
    fields: dict[str, object] = {
        "id": "tester",
        "name": "Tester",
        "avatar": "🧪",
        "description": "A persona for tests.",
        "system_prompt": "You help with tests.",
        "context_budget": 4096,
        "max_reply_tokens": 512,
    }
    return Persona.model_validate({**fields, **changes})


def test_examples_are_sent_after_the_system_prompt_and_counted() -> None:
    plain = persona()
    shown = persona(
        examples=[
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4, and here is why."},
        ]
    )
    assert system_message(plain) == "You help with tests."
    sent = ChatSession.start(shown, OfflineBackend()).conversation
    first = sent.api_messages()[0]
    assert first["role"] == "system"
    assert first["content"].startswith("You help with tests.\n\n" + EXAMPLES_HEADING)
    assert first["content"].endswith("User: What is 2+2?\nAssistant: 4, and here is why.")
    without = ChatSession.start(plain, OfflineBackend()).conversation
    extra = tokenizer_for(shown.model).count_text(first["content"]) - tokenizer_for(plain.model).count_text(
        "You help with tests."
    )
    assert sent.prompt_tokens - without.prompt_tokens == extra > 10


def test_new_fields_round_trip_through_yaml() -> None:
    image = encode_avatar(avatar_png(png(300, 150)))
    original = persona(
        examples=[Example(role="user", content="Hi"), Example(role="assistant", content="Hello\nthere")],
        avatar_image=image,
        extensions={"character_card": {"creator": "someone", "extensions": {"depth_prompt": {"depth": 4}}}},
    )
    text = persona_yaml(original)
    assert parse_persona(text, "tester") == original
    assert isinstance(chat_avatar(original), bytes)
    assert chat_avatar(persona()) == "🧪"


def test_an_avatar_image_is_shrunk_to_a_plain_png_once() -> None:
    normalised = avatar_png(png(1000, 500))
    with Image.open(io.BytesIO(normalised)) as image:
        assert image.format == "PNG"
        assert image.size == (MAX_AVATAR_SIDE, MAX_AVATAR_SIDE // 2)
        assert not {k for k in image.info if k not in {"dpi"}}  # no text chunks survive
    assert avatar_png(normalised) == normalised  # idempotent, so exports round-trip


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not base64!", "is not valid base64"),
        (base64.b64encode(b"GIF89a" + b"\0" * 20).decode(), "must be a PNG image"),
        (encode_avatar(png(400, 10)), "at most 256 pixels a side"),
        ("https://example.com/a.png", "is not valid base64"),
    ],
)
def test_a_bad_avatar_image_is_refused_by_the_file_check(value: str, problem: str) -> None:
    text = persona_yaml(persona()) + f"avatar_image: {value}\n"
    with pytest.raises(PersonaFileError) as caught:
        parse_persona(text, "tester")
    assert problem in str(caught.value)


def test_data_urls_are_read_and_remote_urls_refused() -> None:
    url = "data:image/png;base64," + base64.b64encode(png(20, 20)).decode()
    assert avatar_from_data_url(url).startswith(b"\x89PNG")
    with pytest.raises(AvatarImageError, match="never fetched"):
        avatar_from_data_url("https://example.com/a.png")
    with pytest.raises(AvatarImageError, match="not a PNG, JPEG"):
        avatar_png(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    # A valid IHDR declaring 50,000 × 50,000 pixels: refused before any pixel is decoded.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(AvatarImageError, match="pixels"):
        avatar_png(bomb)


def test_extensions_are_capped() -> None:
    with pytest.raises(ValueError, match="extensions are limited"):
        persona(extensions={"x": "y" * 40_000})


def test_examples_as_text_read_back() -> None:
    examples = [
        Example(role="user", content="Q?"),
        Example(role="assistant", content="A.\n\nMore, with User: inside."),
        Example(role="assistant", content="Again."),
    ]
    text = examples_text(examples)
    assert text == "User: Q?\nAssistant: A.\n\nMore, with User: inside.\nAssistant: Again."
    assert [Example(**m) for m in examples_from_text(text)] == examples
    assert examples_from_text("notes first\nUser:hi") == [{"role": "user", "content": "hi"}]
