"""PDF text extraction, run as a child process by ``documents.processing.extraction``.

Reads the PDF from stdin, writes one JSON object to stdout: ``{"ok": true, "pages": [...]}`` or
``{"ok": false, "code": ..., "detail": ...}``. The parent bounds its memory (RLIMIT_AS), CPU time and
wall time, so a hostile file can only kill this process, never the worker.

Usage: ``python -m documents.processing.pdf_child MAX_PAGES MAX_CHARS MEMORY_BYTES CPU_SECONDS``
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from io import BytesIO
from typing import Any

__all__ = ["extract_pages", "main"]


class _Failure(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def extract_pages(data: bytes, *, max_pages: int, max_chars: int) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError

    try:
        reader = PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                # Many PDFs are "encrypted" only against editing, with an empty user password.
                if not reader.decrypt(""):
                    raise _Failure(
                        "pdf_encrypted",
                        "The PDF is protected by a password; upload a copy without a password.",
                    )
            except (FileNotDecryptedError, DependencyError, NotImplementedError) as exc:
                raise _Failure(
                    "pdf_encrypted",
                    "The PDF is protected by a password; upload a copy without a password.",
                ) from exc
        count = len(reader.pages)
        if count > max_pages:
            raise _Failure(
                "pdf_too_many_pages",
                f"The PDF has {count} pages; at most {max_pages} can be indexed. Split it into smaller files.",
            )
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > max_chars:
                raise _Failure(
                    "pdf_too_much_text",
                    f"The PDF holds more than {max_chars} characters of text; split it into smaller files.",
                )
            pages.append(text)
    except _Failure:
        raise
    except LimitReachedError as exc:
        raise _Failure(
            "pdf_too_large",
            "The PDF expands to more data than can be processed (a compressed stream is too large); "
            "re-export or split it.",
        ) from exc
    except FileNotDecryptedError as exc:
        raise _Failure(
            "pdf_encrypted", "The PDF is protected by a password; upload a copy without a password."
        ) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise _Failure(
            "pdf_corrupt",
            f"The PDF cannot be read ({type(exc).__name__}); re-export it from the original application.",
        ) from exc
    if not any(text.strip() for text in pages):
        raise _Failure(
            "pdf_no_text",
            "The PDF has no extractable text (scanned pages or images only); upload a PDF with a text "
            "layer (run OCR first) or the Markdown source.",
        )
    return pages


def _cap(which: int, value: int) -> None:
    """Lower a limit of this process (never above the hard limit it already has)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    max_pages, max_chars, memory, cpu = (int(a) for a in args[:4])
    _cap(resource.RLIMIT_AS, memory)
    _cap(resource.RLIMIT_CPU, cpu)
    _cap(resource.RLIMIT_CORE, 0)
    logging.disable(logging.CRITICAL)  # pypdf warns about every oddity; the parent wants one answer
    data = sys.stdin.buffer.read()
    result: dict[str, Any]
    try:
        result = {"ok": True, "pages": extract_pages(data, max_pages=max_pages, max_chars=max_chars)}
    except _Failure as failure:
        result = {"ok": False, "code": failure.code, "detail": failure.detail}
    except MemoryError:
        result = {
            "ok": False,
            "code": "pdf_too_complex",
            "detail": "The PDF needs more memory to read than allowed; re-export or split it.",
        }
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
