"""The ledger store (SQLAlchemy 2.x): tables, migrations, posting, reads, verify."""

from spaktok_ledger._store._engine import Retry, configure_sqlite, create_engine
from spaktok_ledger._store._ledger import Ledger
from spaktok_ledger._store._migrate import current_revision, head_revision, migrate, migrate_units
from spaktok_ledger._store._schema import DEFAULT_PREFIX, LedgerTables, tables_for
from spaktok_ledger._store._verify import Problem, VerifyReport

__all__ = [
    "DEFAULT_PREFIX",
    "Ledger",
    "LedgerTables",
    "Problem",
    "Retry",
    "VerifyReport",
    "configure_sqlite",
    "create_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "migrate_units",
    "tables_for",
]
