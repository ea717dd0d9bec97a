"""Structure-aware chunking (pure functions, no I/O).

Markdown is split on ATX headings (``#`` .. ``######``, not inside fenced code); every chunk carries its
heading path (``PRD > Epic 2 > Story 2.3``). Within a section, paragraphs are packed into chunks of about
``target`` words (never more than ``max_words`` unless one word is longer), and a chunk that continues the
previous one in the same section starts with its last ``overlap`` words, so a sentence cut at a boundary
is still found whole. PDF text is packed the same way page after page, and each chunk knows its pages.

Level-2 sections (``## ...`` up to the next level-1 or level-2 heading) are exposed as sections, like the
BMAD shard-doc task splits a document into files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from documents.index.repository import ChunkRow

__all__ = [
    "ChunkingOptions",
    "MarkdownBlock",
    "SectionPart",
    "chunk_markdown",
    "chunk_pages",
    "markdown_blocks",
    "split_sections",
]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MAX_HEADING_CHARS = 200


@dataclass(frozen=True)
class ChunkingOptions:
    target: int = 180
    max_words: int = 240
    overlap: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.target <= self.max_words:
            raise ValueError("need 0 <= overlap < target <= max_words")


@dataclass(frozen=True)
class MarkdownBlock:
    """The text under one heading (up to the next heading of any level)."""

    heading_path: tuple[str, ...]
    level: int  # 0 for text before the first heading
    lines: tuple[str, ...]


@dataclass(frozen=True)
class SectionPart:
    ord: int
    heading: str
    content: str


@dataclass(frozen=True)
class _Unit:
    text: str
    page: int | None
    words: int
    # True when this unit continues the previous unit's paragraph (a sentence or word window of it).
    joined: bool = False


def _clean_heading(raw: str) -> str:
    text = re.sub(r"\s+", " ", raw).strip()
    return text[:_MAX_HEADING_CHARS]


def markdown_blocks(text: str) -> list[MarkdownBlock]:
    """Split Markdown into blocks at ATX headings, tracking the heading path; fences are opaque."""
    blocks: list[MarkdownBlock] = []
    path: list[tuple[int, str]] = []
    current: list[str] = []
    level = 0
    fence: str | None = None

    def flush() -> None:
        blocks.append(MarkdownBlock(tuple(h for _, h in path), level, tuple(current)))

    for line in text.splitlines():
        fence_match = _FENCE.match(line)
        if fence is not None:
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                fence = None
            current.append(line)
            continue
        if fence_match:
            fence = fence_match.group(1)
            current.append(line)
            continue
        heading = _HEADING.match(line)
        if heading is None:
            current.append(line)
            continue
        flush()
        level = len(heading.group(1))
        title = _clean_heading(heading.group(2))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        current = []
    flush()
    return blocks


def _paragraphs(lines: Iterable[str]) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    for line in lines:
        if line.strip():
            buf.append(line.rstrip())
        elif buf:
            out.append("\n".join(buf))
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out


def _split_long(text: str, page: int | None, opts: ChunkingOptions) -> list[_Unit]:
    """A paragraph longer than ``max_words``: by sentences, and a sentence too long by word windows."""
    units: list[_Unit] = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        if len(words) <= opts.max_words:
            if words:
                units.append(_Unit(sentence, page, len(words), joined=bool(units)))
            continue
        for start in range(0, len(words), opts.target):
            window = words[start : start + opts.target]
            units.append(_Unit(" ".join(window), page, len(window), joined=bool(units)))
    return units


def _units(paragraphs: Iterable[tuple[str, int | None]], opts: ChunkingOptions) -> list[_Unit]:
    units: list[_Unit] = []
    for text, page in paragraphs:
        n = len(text.split())
        if n == 0:
            continue
        if n <= opts.max_words:
            units.append(_Unit(text, page, n))
        else:
            units.extend(_split_long(text, page, opts))
    return units


def _pack(units: Sequence[_Unit], opts: ChunkingOptions) -> list[list[_Unit]]:
    """Greedy packing with overlap: each chunk is a list of units (an overlap tail may lead it)."""
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    count = 0
    fresh = 0  # words in ``current`` that are not overlap from the previous chunk
    for unit in units:
        if fresh and (count >= opts.target or count + unit.words > opts.max_words):
            chunks.append(current)
            tail = _tail(current, opts.overlap)
            current, count, fresh = ([tail], tail.words, 0) if tail is not None else ([], 0, 0)
            if count + unit.words > opts.max_words:
                current, count = [], 0
        current.append(unit)
        count += unit.words
        fresh += unit.words
    if fresh:
        chunks.append(current)
    return chunks


def _tail(units: Sequence[_Unit], overlap: int) -> _Unit | None:
    if overlap <= 0 or not units:
        return None
    words: list[str] = []
    page: int | None = None
    for unit in reversed(units):
        unit_words = unit.text.split()
        need = overlap - len(words)
        words = unit_words[-need:] + words
        page = unit.page
        if len(words) >= overlap:
            break
    return _Unit(" ".join(words), page, len(words)) if words else None


def _join(units: Sequence[_Unit]) -> str:
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i:
            parts.append(" " if unit.joined else "\n\n")
        parts.append(unit.text)
    return "".join(parts)


def _rows(packed: Iterable[tuple[tuple[str, ...], list[_Unit]]], start_ord: int = 0) -> list[ChunkRow]:
    rows: list[ChunkRow] = []
    for path, units in packed:
        pages = [u.page for u in units if u.page is not None]
        rows.append(
            ChunkRow(
                ord=start_ord + len(rows),
                heading_path=path,
                content=_join(units),
                page_start=min(pages) if pages else None,
                page_end=max(pages) if pages else None,
            )
        )
    return rows


def chunk_markdown(text: str, opts: ChunkingOptions | None = None) -> list[ChunkRow]:
    """Chunks of a Markdown (or plain text) document, in document order."""
    opts = opts or ChunkingOptions()
    packed: list[tuple[tuple[str, ...], list[_Unit]]] = []
    for block in markdown_blocks(text):
        units = _units(((p, None) for p in _paragraphs(block.lines)), opts)
        packed.extend((block.heading_path, chunk) for chunk in _pack(units, opts))
    return _rows(packed)


def chunk_pages(pages: Sequence[str], opts: ChunkingOptions | None = None) -> list[ChunkRow]:
    """Chunks of a paged document (PDF); pages are 1-based in ``page_start``/``page_end``."""
    opts = opts or ChunkingOptions()
    paragraphs = [
        (p, number) for number, page in enumerate(pages, start=1) for p in _paragraphs(page.splitlines())
    ]
    return _rows(((), chunk) for chunk in _pack(_units(paragraphs, opts), opts))


def split_sections(text: str) -> list[SectionPart]:
    """The level-2 sections: heading and Markdown body (sub-headings included), numbered from 1."""
    sections: list[SectionPart] = []
    heading: str | None = None
    body: list[str] = []

    def flush() -> None:
        if heading is not None:
            sections.append(SectionPart(len(sections) + 1, heading, "\n".join(body).strip("\n")))

    for block in markdown_blocks(text):
        if block.level in (1, 2):
            flush()
            heading, body = (block.heading_path[-1], list(block.lines)) if block.level == 2 else (None, [])
        elif heading is not None:
            body.append("#" * block.level + " " + block.heading_path[-1])
            body.extend(block.lines)
    flush()
    return sections
