"""Tracing and logging setup: OpenTelemetry (W3C trace context) and JSON logs carrying trace/request ids.

The exporter is off unless ``BATON_OTEL_EXPORTER_OTLP_ENDPOINT`` is set; spans are still created so the
trace context flows over HTTP, through the outbox into NATS headers, and back out in consumers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["JsonFormatter", "configure_logging", "configure_tracing", "current_trace_id", "request_id_var"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("baton_request_id", default=None)
_configured_provider: TracerProvider | None = None


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, trace and request ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        if trace_id := current_trace_id():
            doc["trace_id"] = trace_id
        if request_id := request_id_var.get():
            doc["request_id"] = request_id
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, level: str = "INFO", *, json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def configure_tracing(
    service: str, *, otlp_endpoint: str | None = None, processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install a tracer provider once per process. Tests pass an in-memory ``processor``."""
    global _configured_provider
    if _configured_provider is None:
        _configured_provider = TracerProvider(resource=Resource.create({"service.name": service}))
        trace.set_tracer_provider(_configured_provider)
    if processor is not None:
        _configured_provider.add_span_processor(processor)
    elif otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _configured_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces"))
        )
    return _configured_provider
