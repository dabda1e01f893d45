"""Persona avatar images: any picture a user brings, made into a small PNG every view can draw.

An imported image (a character card's PNG, a data: URL) is decoded with Pillow after its
dimensions are checked, shrunk to at most `MAX_AVATAR_SIDE` pixels a side and written again as a
plain PNG, so what is stored is small, holds no metadata (a card's text chunks included) and is
something `st.chat_message` and `st.image` draw. Normalising is idempotent: a normalised avatar
normalised again gives the same bytes, so an export imported back gives the same persona.

Nothing here fetches anything: an image arrives as bytes or as a data: URL, never as a remote URL.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from core.notices import Notice

__all__ = [
    "MAX_AVATAR_BYTES",
    "MAX_AVATAR_SIDE",
    "MAX_SOURCE_PIXELS",
    "AvatarImageError",
    "avatar_from_data_url",
    "avatar_png",
    "check_avatar_png",
    "decode_avatar",
    "encode_avatar",
]

#: The stored avatar's longest side; chat avatars are drawn at about 40 px, gallery cards larger.
MAX_AVATAR_SIDE = 256
#: The stored PNG's size: it travels base64 inside a persona file of at most 256 KiB.
MAX_AVATAR_BYTES = 96 * 1024
#: Pixels a source image may have before it is decoded (a 16-megapixel photo; a decompression
#: bomb declares far more and is refused from its header alone).
MAX_SOURCE_PIXELS = 16_000_000
_SMALLER_SIDES = (192, 128, 96, 64)
_FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class AvatarImageError(ValueError):
    """The bytes are not an image this app can use as an avatar: `reason` says why (a notice the
    page words, `notice.avatar_<…>`), str() in English."""

    def __init__(self, reason: Notice) -> None:
        from core.i18n import english  # the catalogs: loaded only when a picture is refused

        super().__init__(english(reason))
        self.reason = reason


def avatar_png(data: bytes) -> bytes:
    """`data` (PNG, JPEG, WebP or GIF) as a normalised avatar PNG; raises `AvatarImageError`."""
    image = _open(data)
    try:
        if image.width * image.height > MAX_SOURCE_PIXELS:
            raise AvatarImageError(
                Notice(
                    code="avatar_too_many_pixels",
                    fields={
                        "width": image.width,
                        "height": image.height,
                        "limit": MAX_SOURCE_PIXELS // 1_000_000,
                    },
                )
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
            has_alpha = image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info
            converted = image.convert("RGBA" if has_alpha else "RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
            raise AvatarImageError(Notice(code="avatar_damaged", fields={"problem": str(exc)})) from None
    finally:
        image.close()
    for side in (MAX_AVATAR_SIDE, *_SMALLER_SIDES):
        resized = converted.copy()
        resized.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        resized.save(out, format="PNG", optimize=True)
        if out.tell() <= MAX_AVATAR_BYTES:
            return out.getvalue()
    raise AvatarImageError(Notice(code="avatar_does_not_fit", fields={"side": _SMALLER_SIDES[-1]}))


def check_avatar_png(data: bytes) -> None:
    """Raise `AvatarImageError` unless `data` is a PNG within the stored avatar's limits."""
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarImageError(
            Notice(
                code="avatar_too_large", fields={"size": len(data) // 1024, "limit": MAX_AVATAR_BYTES // 1024}
            )
        )
    if not data.startswith(PNG_SIGNATURE):
        raise AvatarImageError(Notice(code="avatar_not_png"))
    image = _open(data)
    try:
        if max(image.size) > MAX_AVATAR_SIDE:
            raise AvatarImageError(
                Notice(
                    code="avatar_too_wide",
                    fields={"width": image.width, "height": image.height, "limit": MAX_AVATAR_SIDE},
                )
            )
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise AvatarImageError(Notice(code="avatar_png_damaged", fields={"problem": str(exc)})) from None
    finally:
        image.close()


def encode_avatar(png: bytes) -> str:
    """The avatar as it is written in a persona file (base64 of the PNG)."""
    return base64.b64encode(png).decode("ascii")


def decode_avatar(text: str) -> bytes:
    """The PNG bytes of a persona file's `avatar_image`; raises `AvatarImageError`."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AvatarImageError(Notice(code="avatar_not_base64")) from None


def avatar_from_data_url(url: str) -> bytes:
    """A `data:image/...;base64,...` URL decoded and normalised; raises `AvatarImageError`.
    Only data URLs are read: a remote URL is refused here and never fetched."""
    head, comma, payload = url.partition(",")
    if not head.lower().startswith("data:image/") or not comma:
        raise AvatarImageError(Notice(code="avatar_not_data_url"))
    if not head.lower().endswith(";base64"):
        raise AvatarImageError(Notice(code="avatar_data_url_not_base64"))
    if len(payload) > 12 * 1024 * 1024:
        raise AvatarImageError(Notice(code="avatar_data_url_too_large", fields={"limit": 12}))
    try:
        raw = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AvatarImageError(Notice(code="avatar_data_url_bad_base64")) from None
    return avatar_png(raw)


def _open(data: bytes) -> Image.Image:
    try:
        # Only the header is read here; `formats` keeps Pillow from trying every decoder it has.
        return Image.open(io.BytesIO(data), formats=_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise AvatarImageError(Notice(code="avatar_not_image")) from None
    except Image.DecompressionBombError as exc:
        raise AvatarImageError(Notice(code="avatar_bomb", fields={"problem": str(exc)})) from None
