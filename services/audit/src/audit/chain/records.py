"""Rebuilding an ``EntryRecord`` from a stored row, so verification hashes exactly what is stored."""

from __future__ import annotations

from audit.chain.canonical import EntryDraft, EntryRecord
from audit.chain.models import Entry

__all__ = ["READ_ACTION", "RETENTION_ACTION", "record_of"]

# Actions the audit service records about itself.
RETENTION_ACTION = "baton.audit.retention.applied.v1"
READ_ACTION = "baton.audit.log.read.v1"


def record_of(row: Entry) -> EntryRecord:
    return EntryRecord(
        id=row.id,
        chain_id=row.chain_id,
        sequence=row.sequence,
        recorded_at=row.recorded_at,
        prev_hash=row.prev_hash,
        hash=row.hash,
        draft=EntryDraft(
            event_id=row.event_id,
            action=row.action,
            payload=row.payload,
            client_id=row.client_id,
            occurred_at=row.occurred_at,
            actor_subject=row.actor_subject,
            actor_kind=row.actor_kind,
            actor_name=row.actor_name,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            request_id=row.request_id,
            trace_id=row.trace_id,
            payload_truncated=row.payload_truncated,
            source_stream=row.source_stream,
            stream_sequence=row.stream_sequence,
            producer=row.producer,
            producer_sequence=row.producer_sequence,
            flagged=row.flagged,
            flag_reason=row.flag_reason,
        ),
    )
