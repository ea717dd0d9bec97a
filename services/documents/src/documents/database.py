"""The declarative base of this service: its tables, in the ``documents`` schema (chosen by search path).

The messaging tables (outbox, inbox, dead letters, relay state) live in the same metadata, so a test
schema built with ``create_all`` and the migrated one hold the same tables. Importing this module imports
every model module, so ``Base.metadata`` is complete wherever it is used.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import schema_metadata
from shared.messaging.outbox import add_messaging_tables

__all__ = ["Base", "messaging"]


class Base(DeclarativeBase):
    metadata = schema_metadata()


messaging = add_messaging_tables(Base.metadata)


def _import_models() -> None:
    from documents.documents import models as _documents  # noqa: F401
    from documents.index import models as _index  # noqa: F401
    from documents.projects import models as _projects  # noqa: F401


_import_models()
