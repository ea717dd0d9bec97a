"""Reading an upload from the ASGI body stream, counting bytes as they arrive.

The request is refused with 413 as soon as the content crosses ``max_bytes`` (a declared
``Content-Length`` over the limit is refused before a byte is read), so an oversized upload never sits
in memory or in the database. Two shapes are accepted:

- ``multipart/form-data``: a ``file`` part plus form fields (``title``, ``kind``, ``tags``, ``epic``,
  ``story``); parsed incrementally with python-multipart, fields bounded in size and count.
- ``application/json``: an object whose ``content`` is the Markdown text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["FIELD_MAX_BYTES", "Upload", "read_upload"]

FIELD_MAX_BYTES = 16 * 1024
MAX_PARTS = 32
# Room for JSON escaping and the other members around ``content``.
JSON_OVERHEAD_BYTES = 1024 * 1024


class UploadTooLarge(PayloadTooLarge):
    code = "upload_too_large"


class MalformedUpload(BadRequest):
    code = "malformed_upload"


@dataclass
class Upload:
    """What the body held. ``data`` is None for a JSON body without ``content`` (the caller decides)."""

    data: bytes | None
    filename: str | None = None
    declared_type: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    json: dict[str, Any] | None = None

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"The upload exceeds the limit of {limit} bytes", limit_bytes=limit)


class _MultipartCollector:
    """Callbacks for python-multipart: collect fields and the one file, enforcing every limit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.upload = Upload(data=None)
        self.parts = 0
        self._headers: dict[str, str] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._buf = bytearray()
        self._name: str | None = None
        self._is_file = False
        self._file_seen = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MalformedUpload(f"At most {MAX_PARTS} form parts are accepted")
        self._headers = {}
        self._buf = bytearray()
        self._name = None
        self._is_file = False

    def on_header_end(self) -> None:
        name = bytes(self._header_field).decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._header_value).decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name")
        if name is None:
            raise MalformedUpload("A form part has no name")
        self._name = name.decode("utf-8", errors="replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self._file_seen:
                raise MalformedUpload("Send exactly one 'file' part")
            self._file_seen = True
            filename = options.get(b"filename")
            self.upload.filename = None if filename is None else filename.decode("utf-8", errors="replace")
            self.upload.declared_type = self._headers.get("content-type")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._buf.extend(data[start:end])
        limit = self.max_bytes if self._is_file else FIELD_MAX_BYTES
        if len(self._buf) > limit:
            if self._is_file:
                raise _too_large(self.max_bytes)
            raise MalformedUpload(f"The form field '{self._name}' is longer than {FIELD_MAX_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._name is None:
            return
        if self._is_file:
            self.upload.data = bytes(self._buf)
        else:
            try:
                value = self._buf.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedUpload(f"The form field '{self._name}' is not UTF-8") from exc
            self.upload.fields.setdefault(self._name, []).append(value)


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def read_upload(request: Request, *, max_bytes: int) -> Upload:
    """Parse the body of an upload request; see the module docstring for shapes and limits."""
    media_type, options = parse_options_header(request.headers.get("content-type"))
    declared = _declared_length(request)
    if media_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedUpload("multipart/form-data needs a boundary")
        total_limit = max_bytes + MAX_PARTS * FIELD_MAX_BYTES
        if declared is not None and declared > total_limit:
            raise _too_large(max_bytes)
        collector = _MultipartCollector(max_bytes)
        parser = MultipartParser(boundary, cast(Any, collector.callbacks()))
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > total_limit:
                raise _too_large(max_bytes)
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise MalformedUpload(f"The multipart body cannot be read: {exc}") from exc
        try:
            parser.finalize()
        except MultipartParseError as exc:
            raise MalformedUpload(f"The multipart body cannot be read: {exc}") from exc
        if not collector._file_seen:
            raise MalformedUpload("The form has no 'file' part")
        return collector.upload
    if media_type == b"application/json" or media_type.endswith(b"+json"):
        limit = max_bytes + JSON_OVERHEAD_BYTES
        if declared is not None and declared > limit:
            raise _too_large(max_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise _too_large(max_bytes)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedUpload(f"The body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise MalformedUpload("The body must be a JSON object")
        content = parsed.get("content")
        data = content.encode("utf-8") if isinstance(content, str) else None
        if data is not None and len(data) > max_bytes:
            raise _too_large(max_bytes)
        return Upload(data=data, declared_type="text/markdown", json=parsed)
    raise UnsupportedMediaType(
        "Send the document as multipart/form-data (a 'file' part) or as application/json with 'content'",
        code="unsupported_request_type",
    )
