"""Logs carry the trace and request ids as JSON; a configured OTLP endpoint really receives the spans."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.telemetry import JsonFormatter, request_id_var


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("baton.test", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_log_line_is_one_json_object_with_the_trace_and_request_ids() -> None:
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
    token = request_id_var.set("req-42")
    try:
        with trace.use_span(NonRecordingSpan(context)):
            line = JsonFormatter("projects").format(_record("project created"))
    finally:
        request_id_var.reset(token)
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["message"] == "project created"
    assert doc["service"] == "projects"
    assert doc["level"] == "warning"
    assert doc["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert doc["request_id"] == "req-42"


def test_outside_a_request_and_a_span_the_ids_are_absent_and_errors_stay_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        line = JsonFormatter("audit").format(_record("failed", exc))
    doc = json.loads(line)
    assert "trace_id" not in doc
    assert "request_id" not in doc
    assert "RuntimeError: boom" in doc["error"]
    assert "\n" not in line


# A process of its own: the tracer provider is installed once per process.
EXPORT = """
import sys
from opentelemetry import trace
from shared.telemetry import configure_tracing

provider = configure_tracing("documents", otlp_endpoint=sys.argv[1])
with trace.get_tracer("t").start_as_current_span("upload-document"):
    pass
provider.shutdown()
"""


def test_a_configured_otlp_endpoint_receives_the_spans() -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        done = subprocess.run([sys.executable, "-c", EXPORT, url], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"upload-document" in body
    assert b"documents" in body
