"""Markdown that never loads a remote resource: every image becomes a link.

An image in a reply, a file, a persona or an error would be fetched from its server the moment it
is drawn (a tracking pixel reveals the reader's address; a label's image loads too). Which
`![` starts an image is decided by a CommonMark parser (markdown-it-py), not a pattern: alt
text may span lines or hold brackets (`![x\\ny](…)`, `![a [b] c](…)`, `![a\\]b](…)`), while a
`![` in code (`vec![1]`) is no image and stays as written. Each image the parser finds has its
`!` replaced by 🖼, which leaves a link to the same address with the alt text as its words; the
result is parsed again until no image is left (an image inside another's alt text becomes live
once the outer one is a link). Raw HTML is parsed as text, as Streamlit shows it.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.rules_inline.image import image as _parse_image

#: What an image's `!` becomes: the image is then a link, shown after this mark.
IMAGE_MARK: Final = "🖼"
#: Rounds of rewriting before every remaining `![` is broken outright (images nested in alt text).
_MAX_ROUNDS: Final = 8
_IMAGE_START: Final = re.compile(r"!\[")
_FOUND: Final = "safe_markdown_images"
#: An absolute POSIX path of two or more parts, not inside a URL (no letter, ':', '/' or '.' just
#: before its first slash): the server's folders, which a visitor has no business seeing.
_SERVER_PATH: Final = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`()<>]+/)+([^\s/'\"`()<>]+)")


def _recording_image(state: StateInline, silent: bool) -> bool:
    """markdown-it's image rule, noting where (in the inline text) each image it makes starts."""
    start = state.pos
    found = _parse_image(state, silent)
    if found and not silent:
        state.env.setdefault(_FOUND, defaultdict(set))[state.src].add(start)
    return found


def _parser() -> MarkdownIt:
    # CommonMark plus the GitHub extensions Streamlit draws (tables, strikethrough); HTML off, so
    # text Streamlit shows escaped is parsed as text here too (and its images are found).
    parser = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    parser.inline.ruler.at("image", _recording_image)
    return parser


_PARSER: Final = _parser()


def _image_starts(text: str) -> set[int]:
    """Offsets in `text` of the `!` of every image the parser finds."""
    env: dict[str, dict[str, set[int]]] = {}
    tokens = _PARSER.parse(text, env)
    found = env.get(_FOUND, {})
    if not found:
        return set()
    lines = text.split("\n")
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line) + 1)
    # Inline texts by the source lines they came from (a table row holds one per cell).
    by_lines: dict[tuple[int, int], list[str]] = defaultdict(list)
    for token in tokens:
        if token.type == "inline" and token.map is not None:
            by_lines[(token.map[0], token.map[1])].append(token.content)
    starts: set[int] = set()
    for (first, last), contents in by_lines.items():
        # Each inline text is its lines less their block markers and indentation, so its `![`
        # are those of its lines, in order: the n-th in the texts is the n-th in the source.
        flags = [
            match.start() in found.get(content, ())
            for content in contents
            for match in _IMAGE_START.finditer(content)
        ]
        region = text[line_starts[first] : line_starts[min(last, len(lines))]]
        offsets = [line_starts[first] + match.start() for match in _IMAGE_START.finditer(region)]
        if len(offsets) == len(flags):
            starts.update(offset for offset, flag in zip(offsets, flags, strict=True) if flag)
        elif any(flags):  # not matched one to one: break every `![` of these lines
            starts.update(offsets)
    return starts


def _rewrite(text: str, starts: set[int]) -> str:
    parts: list[str] = []
    last = 0
    for start in sorted(starts):
        parts.append(text[last:start])
        # An image with no alt text becomes a link with a word to click.
        if text.startswith("![]", start):
            parts.append(IMAGE_MARK + "[image]")
            last = start + 3
        else:
            parts.append(IMAGE_MARK)
            last = start + 1
    parts.append(text[last:])
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def safe_markdown(text: str) -> str:
    """`text` with every Markdown image made a link (see the module's docstring)."""
    if "![" not in text:  # an image starts with these two characters, side by side
        return text
    # The parser's own normalization, so offsets in its lines are offsets in this text.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    for _ in range(_MAX_ROUNDS):
        starts = _image_starts(text)
        if not starts:
            return text
        text = _rewrite(text, starts)
    return _IMAGE_START.sub(IMAGE_MARK + "[", text)


def without_server_paths(text: str) -> str:
    """`text` with each absolute file path cut to its last part (`/srv/app/data/dashboard.db` ->
    `dashboard.db`): errors name the file without telling anyone how the server is laid out."""
    if "/" not in text:  # most texts; the pattern's scan is a cost on every label of every rerun
        return text
    return _SERVER_PATH.sub(r"\1", text)


def shown_text(text: str) -> str:
    """Text from input, a file or an error as the page may show it: no server path, no image."""
    return safe_markdown(without_server_paths(text))


def page_markdown(text: str) -> str:
    """Text as the page draws it with st.markdown or in a label: no server path, images as links,
    and `$` a price rather than the start of LaTeX."""
    return shown_text(text).replace("$", "\\$")
