"""Column types shared by the table modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["Json"]


class Json(TypeDecorator[Any]):
    """JSON; ``jsonb`` on PostgreSQL.

    The PostgreSQL dialect is imported when a PostgreSQL connection needs the
    type, not when the schema is built: ``import spaktok_ledger`` and a ledger
    on SQLite never load it (a ``with_variant(JSONB())`` would, at import).
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())
