"""Baton's event catalog: ``Event`` models per producing service, registered for emit and documentation.

Importing this package imports every per-service module that exists (``shared.events.projects``, ...),
so ``registered_events()`` and the generated AsyncAPI document see the whole catalog.
"""

from __future__ import annotations

import importlib

from shared.events.catalog import (
    SCHEMA_URI_PREFIX,
    DuplicateEventType,
    Event,
    UnknownEventType,
    asyncapi_document,
    event_class,
    is_registered,
    json_schemas,
    parse_event_type,
    register,
    registered_events,
    schema_uri,
    subject_for_type,
)

__all__ = [
    "SCHEMA_URI_PREFIX",
    "SERVICE_MODULES",
    "DuplicateEventType",
    "Event",
    "UnknownEventType",
    "asyncapi_document",
    "event_class",
    "is_registered",
    "json_schemas",
    "parse_event_type",
    "register",
    "registered_events",
    "schema_uri",
    "subject_for_type",
]

# One module per producing service; a service that publishes nothing yet simply has no module.
SERVICE_MODULES = ("identity", "projects", "documents", "workflows", "audit", "gateway")

for _service in SERVICE_MODULES:
    _module = f"{__name__}.{_service}"
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        # Only "this module does not exist" is tolerated; a broken import inside it must surface.
        if exc.name != _module:
            raise
