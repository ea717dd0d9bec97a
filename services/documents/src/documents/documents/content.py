"""What an upload really is, decided from its bytes (the declared type and file name are only hints).

Accepted: PDF (``%PDF-`` in the first 1024 bytes, as readers accept it), and UTF-8 text, stored as
``text/markdown`` (or ``text/plain`` when the caller said plain text). Refused with 415: known binary
formats, text that is not UTF-8, and "text" with NUL bytes or many control characters (a binary file
renamed ``.md``). Refused with 422: empty or whitespace-only content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.errors import UnsupportedMediaType, ValidationFailed

__all__ = ["EmptyContent", "SniffedContent", "UnsupportedContent", "sniff"]

PDF = "application/pdf"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"%!PS", "a PostScript file"),
)
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_SNIFF_CHARS = 64 * 1024


class UnsupportedContent(UnsupportedMediaType):
    code = "unsupported_content"


class EmptyContent(ValidationFailed):
    code = "empty_content"


@dataclass(frozen=True)
class SniffedContent:
    content_type: str
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def media_type(self) -> str:
        """The ``Content-Type`` to serve it with."""
        return self.content_type if self.content_type == PDF else f"{self.content_type}; charset=utf-8"


def _is_plain_hint(declared: str | None, filename: str | None) -> bool:
    if filename and filename.lower().endswith((".md", ".markdown")):
        return False
    if declared and declared.split(";")[0].strip().lower() == PLAIN:
        return True
    return bool(filename and filename.lower().endswith(".txt"))


def sniff(data: bytes, *, declared: str | None = None, filename: str | None = None) -> SniffedContent:
    """Classify ``data`` or raise ``EmptyContent`` / ``UnsupportedContent``."""
    if not data.strip():
        raise EmptyContent("The content is empty")
    digest = hashlib.sha256(data).hexdigest()
    if b"%PDF-" in data[:1024]:
        return SniffedContent(PDF, data, digest)
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise UnsupportedContent(f"The content is {what}; upload Markdown, plain text or PDF")
    if b"\x00" in data:
        raise UnsupportedContent(
            "The content is binary (it has NUL bytes); upload Markdown, plain text or PDF"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedContent(
            f"The content is not UTF-8 text (invalid byte at offset {exc.start}); "
            "upload Markdown, plain text or PDF"
        ) from exc
    sample = text[:_SNIFF_CHARS]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in _ALLOWED_CONTROLS)
    if controls > max(4, len(sample) // 100):
        raise UnsupportedContent(
            "The content looks binary (control characters); upload Markdown, plain text or PDF"
        )
    content_type = PLAIN if _is_plain_hint(declared, filename) else MARKDOWN
    return SniffedContent(content_type, data, digest)
