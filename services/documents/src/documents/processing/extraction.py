"""Text out of a stored version: Markdown and plain text as they are, PDF page by page in a child process.

Every way a file can fail ends in ``ExtractionFailed(code, reason)``: a stable code and a sentence a
person can act on. The child process (``documents.processing.pdf_child``) caps its own memory and CPU time
before it reads a byte (no ``preexec_fn``: unsafe in a threaded worker), and the parent adds a wall-clock
timeout, so an encrypted, corrupt, image-only or zip-bomb PDF costs bounded
resources and can only take down the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass

__all__ = ["ExtractedText", "ExtractionFailed", "ExtractionLimits", "extract_pdf", "extract_text"]


@dataclass(frozen=True)
class ExtractionLimits:
    timeout_seconds: float = 60.0
    memory_bytes: int = 1024 * 1024 * 1024
    max_pages: int = 2000
    max_chars: int = 20_000_000


@dataclass(frozen=True)
class ExtractedText:
    """``pages`` for paged formats (PDF), else ``text``."""

    text: str | None = None
    pages: tuple[str, ...] | None = None


class ExtractionFailed(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def extract_text(data: bytes, limits: ExtractionLimits) -> ExtractedText:
    """Markdown / plain text (already checked to be UTF-8 at upload)."""
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    if len(text) > limits.max_chars:
        raise ExtractionFailed(
            "too_much_text", f"The document holds more than {limits.max_chars} characters; split it."
        )
    if not text.strip():
        raise ExtractionFailed("empty_content", "The document has no text.")
    return ExtractedText(text=text)


async def extract_pdf(data: bytes, limits: ExtractionLimits) -> ExtractedText:
    cpu = max(1, int(limits.timeout_seconds) + 1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "documents.processing.pdf_child",
        str(limits.max_pages),
        str(limits.max_chars),
        str(limits.memory_bytes),
        str(cpu),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(data), limits.timeout_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ExtractionFailed(
            "pdf_timeout",
            f"Reading the PDF took longer than {limits.timeout_seconds:g} s; re-export or split it.",
        ) from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    try:
        result = json.loads(stdout)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        # Killed (memory or CPU cap) or crashed before it could answer.
        raise ExtractionFailed(
            "pdf_too_complex",
            f"Reading the PDF exceeded the processing limits (exit {proc.returncode}); re-export or split it.",
        )
    if not result.get("ok"):
        raise ExtractionFailed(str(result.get("code", "pdf_corrupt")), str(result.get("detail", "")))
    pages = result.get("pages")
    if not isinstance(pages, list) or not all(isinstance(p, str) for p in pages):
        raise ExtractionFailed("pdf_corrupt", "The PDF could not be read.")
    return ExtractedText(pages=tuple(p.replace("\x00", "") for p in pages))
