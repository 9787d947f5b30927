"""Small SQL helpers shared by the compliance modules."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["insert_for"]


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` (with ``ON CONFLICT``) for ``table`` on this connection."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
