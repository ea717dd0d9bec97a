"""Domain errors of the audit service (rendered once as problem+json by ``shared``)."""

from __future__ import annotations

from shared.errors import BadRequest, NotFound, ValidationFailed

__all__ = ["ChainNotFound", "EntryNotFound", "InvalidFilter", "QueryTooBroad"]


class EntryNotFound(NotFound):
    code = "audit_entry_not_found"


class ChainNotFound(NotFound):
    code = "audit_chain_not_found"


class InvalidFilter(ValidationFailed):
    code = "invalid_audit_filter"


class QueryTooBroad(BadRequest):
    code = "audit_query_too_broad"
