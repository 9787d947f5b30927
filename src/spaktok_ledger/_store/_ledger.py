"""The ledger store: posting, holds, reversals, balances, history, verification.

One class, :class:`Ledger`, over SQLAlchemy Core. It can own its engine (each
call is one transaction, retried on transient contention) or join a host's
``Connection``/``Session`` (each call runs in a SAVEPOINT of the host's
transaction and never commits on the host's behalf).

How a write proceeds (the order matters):

1. Resolve account codes (cached: accounts are immutable once opened).
2. ``INSERT`` the entry ``ON CONFLICT DO NOTHING``: the unique idempotency key
   is claimed first, so a replay is recognised before any balance is touched
   and returns the original result even if it could not be applied today.
3. ``INSERT`` the postings.
4. Update balance rows in ascending ``(account_id, shard)`` order, so that two
   writers can never wait on each other in a cycle. A no-overdraft account's
   outflow is a guarded ``UPDATE ... WHERE available_after >= 0``; a sharded
   account's outflow first locks all its shards (``SELECT ... FOR UPDATE``).
   Inflows to a sharded (hot) account touch one random shard only.
5. Any refusal raises, and the transaction (or savepoint) rolls back: no
   entry, posting, balance change or idempotency key is left behind.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Engine, Row
from sqlalchemy.orm import Session

from spaktok_ledger._clock import Clock, utc_now
from spaktok_ledger._domain import (
    Account,
    AccountKind,
    AccountSpec,
    Balance,
    Entry,
    EntryDraft,
    EntryPage,
    EntryPhase,
    HistoryPage,
    Posting,
    TrialBalance,
    TrialBalanceRow,
    check_account_code,
    check_json,
    stored_posting,
)
from spaktok_ledger._errors import (
    AccountConflict,
    AlreadyReversed,
    CurrencyMismatch,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidInput,
    SchemaError,
    UnknownAccount,
    UnknownEntry,
)
from spaktok_ledger._log import entry_fields, observed
from spaktok_ledger._store import _checkpoint, _reads
from spaktok_ledger._store._cursor import decode_cursor, encode_cursor
from spaktok_ledger._store._engine import READ_ONLY, Retry, configure_sqlite, create_engine
from spaktok_ledger._store._ingest import IngestReport, ingest
from spaktok_ledger._store._migrate import current_revision, head_revision, migrate
from spaktok_ledger._store._overflow import check_delta, translate_overflow
from spaktok_ledger._store._schema import DEFAULT_PREFIX, LedgerTables, tables_for
from spaktok_ledger._store._together import (
    MAX_LEGS_TOGETHER,
    PREPARED_DRIVERS,
    ArrayInsert,
    ArrayUpdate,
    Attached,
    Prepared,
    array_insert,
    balances_update,
    entry_with_postings,
    plain_insert,
    prepare,
)
from spaktok_ledger._store._units import check_units
from spaktok_ledger._store._verify import VerifyReport, verify_ledger
from spaktok_ledger._validate import (
    MAX_ENTRY_ID,
    MAX_KEY_COLUMN,
    check_entry_id,
    check_int,
    check_text,
    check_types,
    shown,
)

__all__ = ["Clock", "Ledger", "utc_now"]

T = TypeVar("T")
Bind = Engine | Connection | Session | str | sa.URL

_Mode = Literal["post", "hold", "resolve_post", "resolve_void"]
MAX_PAGE = 500
# Connection.info key: codes of accounts opened in the current transaction,
# which must not enter the account cache until that transaction commits.
_OPENED = "spaktok_opened_accounts"
# Hot-path statements kept compiled per ledger (a handful are the library's; a
# caller building statements per call would only miss the cache, not grow it).
MAX_PREPARED: Final = 64
_UNPREPARED: Final[Any] = object()  # not in the cache of prepared statements yet
# From this many guarded balance rows on, one unit writes them together (see
# Ledger._flush): with psycopg one update of arrays, otherwise one executemany inside
# a savepoint; fewer go one guarded row per executemany, which names a refusal.
GROUPED_GUARDS: Final = 3


@dataclass(frozen=True, slots=True)
class _Guarded:
    """A balance row of a flush that the overdraft guard can refuse."""

    acct: _Acct
    change: int
    """The account's available change (negative)."""
    row: int
    """Its index in the flush's rows."""


@dataclass(frozen=True, slots=True)
class _Acct:
    """What a write needs to know about an account (cached)."""

    id: int
    code: str
    kind: AccountKind
    currency: str
    allow_overdraft: bool
    shards: int


@dataclass(slots=True)
class _Delta:
    posted: int = 0
    pending_debit: int = 0
    pending_credit: int = 0


@dataclass(frozen=True, slots=True)
class _Op:
    """A validated write, ready for the store."""

    kind: str  # post | hold | post_hold | void_hold | expire_hold | reverse
    mode: _Mode
    key: str
    request_hash: str
    type: str
    phase: EntryPhase
    description: str
    metadata: dict[str, Any]
    effective_at: datetime
    recorded_at: datetime
    postings: tuple[Posting, ...]
    """Postings stored with the entry (none for a void)."""
    balance_postings: tuple[Posting, ...]
    """Postings whose amounts move balances (the hold's, for resolutions)."""
    expires_at: datetime | None = None
    hold_id: int | None = None
    reverses_id: int | None = None


@dataclass(slots=True)
class _Unit:
    """Per-transaction state of an atomic() unit of work."""

    failed: bool = False
    deltas: dict[int, _Delta] = field(default_factory=dict)
    """Balance changes collected from the unit's posts, applied once at its end."""
    accounts: dict[int, _Acct] = field(default_factory=dict)
    read: dict[str, Balance] = field(default_factory=dict)
    """Balances as stored when the unit last read them (before its own deltas)."""


@dataclass(slots=True)
class _Shared:
    """State shared by a ledger and the views bound to connections from it."""

    accounts: dict[str, _Acct] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)  # shard picks, not secrets
    together: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    """PostgreSQL statements writing an entry with its postings and attached rows."""
    arrays: dict[tuple[Any, ...], ArrayInsert | None] = field(default_factory=dict)
    """Many-row inserts for psycopg, by table, columns, returned columns and dialect
    (None: ``array_insert`` refused it)."""
    balances_update: dict[Any, ArrayUpdate] = field(default_factory=dict)
    """The update of arrays of the balance rows (psycopg), by dialect."""
    prepared: dict[tuple[Any, ...], Prepared | None] = field(default_factory=dict)
    """Hot-path statements compiled for the driver, by Core statement, dialect,
    parameter names and executemany (None: ``prepare`` refused it)."""


def _fingerprint(kind: str, fields: dict[str, Any]) -> str:
    text = json.dumps({"op": kind, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


_Attach = tuple[Sequence[str], Callable[[dict[str, Balance]], Sequence[Attached]]]
"""Rows to write with an entry: the codes whose balances after it they show, and
the function making them from those balances (``Ledger._post_with``)."""


def _entry_row(op: _Op) -> dict[str, Any]:
    """The entry's row: the parameters of its insert."""
    return {
        "type": op.type,
        "phase": op.phase.value,
        "idempotency_key": op.key,
        "request_hash": op.request_hash,
        "description": op.description,
        "metadata": op.metadata,
        "effective_at": op.effective_at,
        "recorded_at": op.recorded_at,
        "expires_at": op.expires_at,
        "hold_id": op.hold_id,
        "reverses_id": op.reverses_id,
    }


def _with_deltas(found: dict[str, Balance], by_code: Mapping[str, _Delta]) -> dict[str, Balance]:
    """``found`` with the (debit-positive) deltas of ``by_code`` added."""
    out = dict(found)
    for code, b in found.items():
        d = by_code.get(code)
        if d is None:
            continue
        sign = b.kind.normal_sign
        pending_in, pending_out = (
            (d.pending_debit, d.pending_credit) if sign > 0 else (d.pending_credit, d.pending_debit)
        )
        out[code] = replace(
            b,
            posted_minor=b.posted_minor + sign * d.posted,
            pending_in_minor=b.pending_in_minor + pending_in,
            pending_out_minor=b.pending_out_minor + pending_out,
        )
    return out


def _op_deltas(op: _Op, accounts: Mapping[str, _Acct]) -> dict[int, _Delta]:
    """The balance change of each account an op touches (debit-positive)."""
    deltas: dict[int, _Delta] = defaultdict(_Delta)
    for p in op.balance_postings:
        d = deltas[accounts[p.account].id]
        amount = p.amount_minor
        if op.mode in ("post", "resolve_post"):
            d.posted += amount
        if op.mode == "hold":
            if amount > 0:
                d.pending_debit += amount
            else:
                d.pending_credit -= amount
        elif op.mode in ("resolve_post", "resolve_void"):
            if amount > 0:
                d.pending_debit -= amount
            else:
                d.pending_credit += amount
    return deltas


def _available_change(acct: _Acct, d: _Delta) -> int:
    """How much ``d`` changes the account's available balance (normal sign)."""
    sign = acct.kind.normal_sign
    return sign * d.posted - (d.pending_credit if sign > 0 else d.pending_debit)


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime, got {shown(value)}")
    return value.astimezone(UTC)


class Ledger:
    """A double-entry ledger on SQLite or PostgreSQL.

    ``bind`` is a database URL, an ``Engine``, or a host's ``Connection`` /
    ``Session`` whose transaction the ledger joins::

        ledger = Ledger("sqlite:///spaktok.db")
        ledger.migrate()
        ledger.open_account(AccountSpec("user:1:wallet", AccountKind.LIABILITY))

    No engine is created at import time and there is no global state: the
    host decides where the ledger lives and how long it is open.
    """

    def __init__(
        self,
        bind: Bind,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = utc_now,
        retry: Retry | None = None,
    ) -> None:
        self._tables: LedgerTables = tables_for(prefix)
        self._clock = clock
        self._retry = retry or Retry()
        self._shared = _Shared()
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._session: Session | None = None
        self._owns_engine = False
        self._unit = _Unit()
        # "engine": each call is its own transaction; "unit": inside atomic(),
        # no savepoints; "host": a caller's connection, one savepoint per call.
        self._mode: Literal["engine", "unit", "host"]
        if isinstance(bind, str | sa.URL):
            self._engine = create_engine(bind)
            self._owns_engine = True
            self._mode = "engine"
        elif isinstance(bind, Engine):
            self._engine = configure_sqlite(bind)
            self._mode = "engine"
        elif isinstance(bind, Connection):
            self._conn = bind
            self._mode = "host"
        elif isinstance(bind, Session):
            self._session = bind
            self._mode = "host"
        else:
            raise InvalidInput(
                f"bind must be a URL, Engine, Connection or Session, not {type(bind).__name__}"
            )
        self._dialect = self._dialect_name()
        if self._dialect not in ("sqlite", "postgresql"):
            raise InvalidInput(
                f"spaktok-ledger supports SQLite and PostgreSQL, not {self._dialect}"
            )
        self._build_statements()
        self._reads = _reads.read_statements(self._tables.prefix, self._dialect)
        self._codes: dict[int, str] = {}  # account id -> code (accounts are immutable)

    # -- wiring ---------------------------------------------------------------

    def _dialect_name(self) -> str:
        if self._engine is not None:
            return self._engine.dialect.name
        if self._conn is not None:
            return self._conn.dialect.name
        assert self._session is not None
        return self._session.get_bind().dialect.name

    def _view(self, conn: Connection | Session, mode: Literal["unit", "host"]) -> Ledger:
        view = object.__new__(Ledger)
        view._tables = self._tables
        view._clock = self._clock
        view._retry = self._retry
        view._shared = self._shared
        view._engine = None
        view._owns_engine = False
        view._conn = conn if isinstance(conn, Connection) else None
        view._session = conn if isinstance(conn, Session) else None
        view._mode = mode
        view._dialect = self._dialect
        view._stmts = self._stmts
        view._reads = self._reads
        view._codes = self._codes
        view._unit = _Unit()
        return view

    def _check_unit(self) -> None:
        if self._unit.failed:
            raise InvalidInput(
                "a ledger call failed inside atomic() and its error was caught: the unit of "
                "work may hold part of the refused write, so it was rolled back. Catch "
                "refusals outside atomic(), or let them propagate."
            )

    def using(self, bind: Connection | Session) -> Ledger:
        """This ledger joined to a host's connection or session.

        Every call then runs in a SAVEPOINT of the host's transaction; the
        host commits (or rolls back) everything together::

            with Session(engine) as session, session.begin():
                session.add(order)
                ledger.using(session).post(draft)
        """
        if not isinstance(bind, Connection | Session):
            raise InvalidInput("using() takes a Connection or a Session")
        return self._view(bind, "host")

    @property
    def prefix(self) -> str:
        return self._tables.prefix

    @property
    def tables(self) -> LedgerTables:
        return self._tables

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def engine(self) -> Engine | None:
        """The engine, when the ledger has one (not for a bound view)."""
        return self._engine

    def now(self) -> datetime:
        """The ledger's clock, UTC."""
        return _aware(self._clock(), "the clock's time")

    def close(self) -> None:
        """Dispose of the engine if the ledger created it from a URL."""
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        assert self._session is not None
        return self._session.connection()

    @contextmanager
    def _savepoint(self) -> Iterator[Connection]:
        if self._session is not None:
            with self._session.begin_nested():
                yield self._session.connection()
        else:
            assert self._conn is not None
            with self._conn.begin_nested():
                yield self._conn

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` as one atomic unit, retrying transient contention."""
        if self._mode == "unit":
            # No savepoint per call inside atomic(): a refused write may have
            # left rows behind, so the unit is marked and cannot commit.
            try:
                return fn(self._host_connection())
            except BaseException:
                self._unit.failed = True
                raise

        def attempt() -> T:
            if self._mode == "host":
                with self._savepoint() as conn:
                    return fn(conn)
            assert self._engine is not None
            with self._engine.begin() as conn:
                try:
                    return fn(conn)
                finally:
                    conn.info.pop(_OPENED, None)

        return self._retry.run(attempt)

    def _read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """Run a read; ``snapshot``: on PostgreSQL, all its queries see one moment
        (REPEATABLE READ), for multi-query reads such as ``verify``."""
        if self._mode != "engine":
            return fn(self._host_connection())
        engine = self._engine
        assert engine is not None

        def attempt() -> T:
            with engine.connect() as conn:
                conn.execution_options(**READ_ONLY)
                if snapshot and self._dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                return fn(conn)

        return self._retry.run(attempt)

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` for reads (an extension point for service layers).

        On an engine: a short read-only transaction of its own, retried on
        transient contention. Inside ``atomic()`` or on a host's connection:
        that connection, so the read sees the transaction's own writes.
        """
        return self._read(fn)

    def connection(self) -> Connection:
        """The connection of the current unit of work (inside ``atomic()`` or ``using()``).

        Service layers write their own rows (quotes, purchases, outbox events)
        through it, in the same transaction as the ledger's entries.
        """
        if self._mode == "engine":
            raise InvalidInput("connection() is only available inside atomic() or using()")
        return self._host_connection()

    def atomic(self, fn: Callable[[Ledger], T]) -> T:
        """Run ``fn(ledger)`` in one transaction: all its ledger calls commit together.

        Transient contention retries the whole function, so ``fn`` must not
        have side effects outside the database. The service layer uses this to
        post an entry and read the balances it returns in one transaction.
        """
        if self._mode == "unit":
            return fn(self)
        if self._mode == "host":

            def in_savepoint() -> T:
                with self._savepoint() as conn:
                    view = self._view(conn, "unit")
                    result = fn(view)
                    view._check_unit()
                    view._end_unit(conn)
                    return result

            return self._retry.run(in_savepoint)
        engine = self._engine
        assert engine is not None

        def attempt() -> T:
            with engine.begin() as conn:
                try:
                    view = self._view(conn, "unit")
                    result = fn(view)
                    view._check_unit()
                    view._end_unit(conn)
                    return result
                finally:
                    conn.info.pop(_OPENED, None)

        return self._retry.run(attempt)

    def _in_savepoint(self, fn: Callable[[Ledger], T]) -> T:
        """Inside ``atomic()``: run ``fn(self)`` in a SAVEPOINT; if it raises, the
        savepoint and the balance changes it collected are rolled back and the
        unit may still commit (group commit runs each gift this way)."""
        if self._mode != "unit":
            raise InvalidInput("_in_savepoint() is only for a unit of work inside atomic()")
        unit = self._unit
        saved = {k: replace(d) for k, d in unit.deltas.items()}
        failed = unit.failed
        conn = self._host_connection()
        savepoint = conn.begin_nested()
        try:
            result = fn(self)
        except BaseException:
            savepoint.rollback()
            unit.deltas, unit.failed = saved, failed
            raise
        savepoint.commit()
        return result

    # -- schema ---------------------------------------------------------------

    def migrate(self) -> str:
        """Create or upgrade the ledger's tables (Alembic); returns the revision."""
        if self._mode == "engine":
            assert self._engine is not None
            return migrate(self._engine, self.prefix)
        return migrate(self._host_connection(), self.prefix)

    def check_schema(self) -> None:
        """Raise ``SchemaError`` unless the tables exist at this library's revision.

        Then raise ``UnitsMismatch`` (a ``SchemaError``) if stored amounts were
        written at other exponents than this library uses: for hosts that run
        the migrations at deploy time and only check at start.
        """
        rev = self._read(lambda conn: current_revision(conn, self.prefix))
        head = head_revision()
        if rev != head:
            raise SchemaError(
                f"ledger tables under prefix {self.prefix!r} are at revision {rev}, "
                f"this library needs {head}: run `spaktok-ledger migrate`",
                revision=rev,
                expected=head,
            )
        self._read(lambda conn: check_units(conn, self._tables))

    # -- statements -----------------------------------------------------------

    def _build_statements(self) -> None:
        t = self._tables
        b = t.balances
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        bp = sa.bindparam
        set_deltas = {
            "posted": b.c.posted + bp("d_posted"),
            "pending_debit": b.c.pending_debit + bp("d_pd"),
            "pending_credit": b.c.pending_credit + bp("d_pc"),
            "version": b.c.version + 1,
        }
        row = sa.and_(b.c.account_id == bp("b_account"), b.c.shard == bp("b_shard"))
        available_after = sa.case(
            (
                b.c.normal_sign == 1,
                (b.c.posted + bp("d_posted")) - (b.c.pending_credit + bp("d_pc")),
            ),
            else_=-(b.c.posted + bp("d_posted")) - (b.c.pending_debit + bp("d_pd")),
        )
        self._stmts = {
            "insert_entry": dialect_insert(t.entries)
            .on_conflict_do_nothing()
            .returning(t.entries.c.id),
            "insert_account": dialect_insert(t.accounts)
            .on_conflict_do_nothing()
            .returning(t.accounts.c.id, t.accounts.c.created_at),
            "update_balance": b.update().where(row).values(**set_deltas),
            "update_balance_checked": b.update()
            .where(row, sa.or_(b.c.allow_overdraft, available_after >= 0))
            .values(**set_deltas),
            "update_balance_guarded": b.update()
            .where(row, available_after >= 0)
            .values(**set_deltas)
            .returning(b.c.version),
            "lock_shards": sa.select(
                b.c.shard, b.c.normal_sign, b.c.posted, b.c.pending_debit, b.c.pending_credit
            )
            .where(b.c.account_id == bp("b_account"))
            .order_by(b.c.shard)
            .with_for_update(),
            "insert_postings": t.postings.insert(),
            # Built once: building and cache-keying a select per call costs more
            # than the query itself.
            "balances_by_code": sa.select(
                t.accounts.c.code,
                t.accounts.c.kind,
                t.accounts.c.currency,
                sa.func.sum(b.c.posted).label("posted"),
                sa.func.sum(b.c.pending_debit).label("pending_debit"),
                sa.func.sum(b.c.pending_credit).label("pending_credit"),
            )
            .join(b, b.c.account_id == t.accounts.c.id)
            .where(t.accounts.c.code.in_(bp("codes", expanding=True)))
            .group_by(t.accounts.c.id, t.accounts.c.code, t.accounts.c.kind, t.accounts.c.currency),
            "insert_entries_returning": t.entries.insert().returning(
                t.entries.c.id, sort_by_parameter_order=True
            ),
            "entry_by_key": sa.select(t.entries.c.id, t.entries.c.request_hash).where(
                t.entries.c.idempotency_key == bp("key")
            ),
        }

    # -- accounts ---------------------------------------------------------------

    def open_account(self, spec: AccountSpec) -> Account:
        """Open an account, or return it if it already exists with the same definition.

        A different definition under the same code raises ``AccountConflict``.
        """
        return self.open_accounts([spec])[0]

    def open_accounts(self, specs: Iterable[AccountSpec]) -> list[Account]:
        """Open several accounts in one transaction (idempotently, like ``open_account``)."""
        specs = list(specs)
        for spec in specs:
            if not isinstance(spec, AccountSpec):
                raise InvalidInput(f"expected an AccountSpec, got {shown(spec)}")
        now = self.now()
        return self._write(lambda conn: [self._open(conn, spec, now) for spec in specs])

    def _open(self, conn: Connection, spec: AccountSpec, now: datetime) -> Account:
        t = self._tables
        row = conn.execute(
            self._stmts["insert_account"],
            {
                "code": spec.code,
                "kind": spec.kind.value,
                "currency": spec.currency,
                "allow_overdraft": spec.allow_overdraft,
                "balance_shards": spec.balance_shards,
                "metadata": dict(spec.metadata),
                "created_at": now,
            },
        ).first()
        if row is None:
            existing = self._load_account(conn, spec.code)
            if existing is None:  # pragma: no cover - the conflict row vanished
                raise AccountConflict(f"account {spec.code} could not be opened")
            if existing.spec() != spec:
                raise AccountConflict(
                    f"account {spec.code} already exists with a different definition",
                    account=spec.code,
                    existing=_spec_dict(existing.spec()),
                    requested=_spec_dict(spec),
                )
            return existing
        account_id, created_at = row
        conn.info.setdefault(_OPENED, set()).add(spec.code)
        conn.execute(
            t.balances.insert(),
            [
                {
                    "account_id": account_id,
                    "shard": shard,
                    "normal_sign": spec.kind.normal_sign,
                    "allow_overdraft": spec.allow_overdraft,
                    "shard_count": spec.balance_shards,
                }
                for shard in range(spec.balance_shards)
            ],
        )
        return Account(
            account_id,
            spec.code,
            spec.kind,
            spec.currency,
            spec.allow_overdraft,
            spec.balance_shards,
            dict(spec.metadata),
            created_at,
        )

    def _load_account(self, conn: Connection, code: str) -> Account | None:
        a = self._tables.accounts
        row = conn.execute(sa.select(a).where(a.c.code == code)).first()
        return None if row is None else _account_from_row(row)

    def account(self, code: str) -> Account:
        """The account with this code, or ``UnknownAccount``."""
        check_account_code(code)
        found = self._read(lambda conn: self._load_account(conn, code))
        if found is None:
            raise UnknownAccount(f"no account {code}", account=code)
        return found

    def accounts(self, *, prefix: str = "") -> list[Account]:
        """All accounts whose code starts with ``prefix``, by code."""
        check_text(prefix, "prefix", max_length=200, min_length=0)
        a = self._tables.accounts
        query = sa.select(a).order_by(a.c.code)
        if prefix:
            query = query.where(a.c.code.startswith(prefix, autoescape=True))
        return self._read(lambda conn: [_account_from_row(r) for r in conn.execute(query)])

    def _resolve(self, conn: Connection, codes: Iterable[str]) -> dict[str, _Acct]:
        cache = self._shared.accounts
        wanted = set(codes)
        missing = [code for code in wanted if code not in cache]
        if missing:
            a = self._tables.accounts
            rows = conn.execute(
                sa.select(
                    a.c.id,
                    a.c.code,
                    a.c.kind,
                    a.c.currency,
                    a.c.allow_overdraft,
                    a.c.balance_shards,
                ).where(a.c.code.in_(missing))
            )
            # Accounts are immutable, so caching is safe once their row is
            # committed; a host's transaction may still roll back, so rows
            # seen through a host connection are used but not cached.
            fresh = set() if self._mode == "host" else conn.info.get(_OPENED, set())
            found = {}
            for r in rows:
                found[r.code] = _Acct(
                    r.id,
                    r.code,
                    AccountKind(r.kind),
                    r.currency,
                    r.allow_overdraft,
                    r.balance_shards,
                )
                if self._mode != "host" and r.code not in fresh:
                    cache[r.code] = found[r.code]
            unknown = sorted(code for code in missing if code not in found)
            if unknown:
                raise UnknownAccount(
                    f"no account {', '.join(unknown)}: open it first", accounts=unknown
                )
            return {code: cache.get(code) or found[code] for code in wanted}
        return {code: cache[code] for code in wanted}

    # -- writes -----------------------------------------------------------------

    def post(self, draft: EntryDraft, *, request: Mapping[str, Any] | None = None) -> Entry:
        """Record a balanced entry and apply it to the balances.

        Idempotent by ``draft.idempotency_key``: the same draft again returns
        the first result (``entry.replayed`` is true) and writes nothing; a
        different draft under the same key raises ``IdempotencyConflict``. A
        no-overdraft account that would go below zero raises
        ``InsufficientFunds`` and nothing is written.

        ``request``: when the entry is *derived* from a higher-level request
        (a gift, a purchase), pass that request here; idempotency then
        compares requests, not drafts, so a replay after, say, a split change
        still returns the original entry.
        """
        return self._submit(self._op_from_draft("post", draft, None, request))

    def hold(
        self,
        draft: EntryDraft,
        *,
        expires_at: datetime | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Record a pending entry (a hold): it counts against available balances
        until ``post_hold`` posts it or ``void_hold``/``expire_holds`` releases it."""
        if expires_at is not None:
            expires_at = _aware(expires_at, "expires_at")
        return self._submit(self._op_from_draft("hold", draft, expires_at, request))

    def _op_from_draft(
        self,
        kind: str,
        draft: EntryDraft,
        expires_at: datetime | None,
        request: Mapping[str, Any] | None = None,
        *,
        request_built: bool = False,
    ) -> _Op:
        """The operation for ``draft``. ``request_built``: ``request`` is a plain dict
        the library built from checked values (a gift's), used as it is; a caller's
        request is checked and copied as JSON first (the same hash either way)."""
        if not isinstance(draft, EntryDraft):
            raise InvalidInput(f"expected an EntryDraft, got {type(draft).__name__}")
        now = self.now()
        if request is not None:
            checked = request if request_built else check_json(request, name="request")
            fields: dict[str, Any] = {"request": checked}
        else:
            fields = draft.fingerprint_fields()
            fields["expires_at"] = expires_at.isoformat() if expires_at else None
        if expires_at is not None and expires_at <= now:
            raise InvalidEntry("a hold's expires_at must be in the future")
        return _Op(
            kind=kind,
            mode="post" if kind == "post" else "hold",
            key=draft.idempotency_key,
            request_hash=_fingerprint(kind, fields),
            type=draft.type,
            phase=EntryPhase.POSTED if kind == "post" else EntryPhase.PENDING,
            description=draft.description,
            metadata=dict(draft.metadata),
            effective_at=(draft.effective_at or now).astimezone(UTC),
            recorded_at=now,
            postings=tuple(draft.postings),
            balance_postings=tuple(draft.postings),
            expires_at=expires_at,
        )

    def ingest(self, drafts: Iterable[EntryDraft], *, batch_size: int = 1000) -> IngestReport:
        """Import many posted entries fast (migrations, imports from another ledger).

        Each batch of ``batch_size`` drafts is one transaction with one
        multi-row insert per table and each balance row updated once. Drafts
        whose key is already recorded for the same request are skipped; see
        ``docs/gifts.md`` ("Bulk ingest") for how overdraft is checked::

            report = ledger.ingest(drafts)
            report.inserted, report.replayed
        """
        return ingest(self, drafts, batch_size)

    def post_hold(
        self,
        hold_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Post a pending hold in full: a new ``posted`` entry with the hold's postings."""
        return self._resolve_hold("post_hold", hold_id, idempotency_key, description, metadata)

    def void_hold(
        self,
        hold_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Void a pending hold: its amounts are available again. Writes a ``voided``
        entry with no postings that names the hold."""
        return self._resolve_hold("void_hold", hold_id, idempotency_key, description, metadata)

    def _resolve_hold(
        self,
        kind: str,
        hold_id: int,
        key: str | None,
        description: str | None,
        metadata: dict[str, Any] | None,
        *,
        now: datetime | None = None,
    ) -> Entry:
        check_entry_id(hold_id, "hold_id")
        _check_optional(key, description)
        suffix = {"post_hold": "post", "void_hold": "void", "expire_hold": "expire"}[kind]
        key = key if key is not None else f"hold:{hold_id}:{suffix}"
        meta = check_json(metadata or {})
        request_hash = _fingerprint(
            kind, {"hold_id": hold_id, "description": description, "metadata": meta}
        )
        now = now or self.now()

        def run(conn: Connection) -> Entry:
            replay = self._replay_by_key(conn, key, request_hash)
            if replay is not None:
                return replay
            hold = self._load_entry(conn, hold_id)
            if hold is None:
                raise UnknownEntry(f"no entry {hold_id}", entry_id=hold_id)
            if hold.phase is not EntryPhase.PENDING:
                raise HoldNotPending(f"entry {hold_id} is not a hold", entry_id=hold_id)
            status = self._hold_status(conn, hold_id)
            if status is not EntryPhase.PENDING:
                raise HoldNotPending(
                    f"hold {hold_id} is already {status.value}",
                    entry_id=hold_id,
                    status=status.value,
                )
            if kind == "post_hold" and hold.expires_at is not None and hold.expires_at <= now:
                raise HoldNotPending(
                    f"hold {hold_id} expired at {hold.expires_at.isoformat()}",
                    entry_id=hold_id,
                    status="expired",
                )
            op = _Op(
                kind=kind,
                mode="resolve_post" if kind == "post_hold" else "resolve_void",
                key=key,
                request_hash=request_hash,
                type=hold.type,
                phase={
                    "post_hold": EntryPhase.POSTED,
                    "void_hold": EntryPhase.VOIDED,
                    "expire_hold": EntryPhase.EXPIRED,
                }[kind],
                description=description if description is not None else hold.description,
                metadata=meta or dict(hold.metadata),
                effective_at=now,
                recorded_at=now,
                postings=hold.postings if kind == "post_hold" else (),
                balance_postings=hold.postings,
                hold_id=hold_id,
            )
            return self._record(conn, op)

        return self._write(run)

    def expire_holds(self, *, now: datetime | None = None, limit: int = 1000) -> list[Entry]:
        """Expire pending holds whose ``expires_at`` has passed; returns the expiry entries.

        Each hold is expired in its own transaction; a hold resolved meanwhile
        by someone else is skipped. Run it periodically (``spaktok-ledger
        expire-holds``).
        """
        now = _aware(now, "now") if now is not None else self.now()
        check_int(limit, "limit", minimum=1, maximum=100_000)
        e, r = self._tables.entries, self._tables.entries.alias("r")
        query = (
            sa.select(e.c.id)
            .outerjoin(r, r.c.hold_id == e.c.id)
            .where(e.c.phase == "pending", e.c.expires_at <= now, r.c.id.is_(None))
            .order_by(e.c.expires_at, e.c.id)
            .limit(limit)
        )
        hold_ids = self._read(lambda conn: list(conn.execute(query).scalars()))
        expired = []
        for hold_id in hold_ids:
            try:
                expired.append(
                    self._resolve_hold(
                        "expire_hold", hold_id, None, None, {"reason": "expired"}, now=now
                    )
                )
            except HoldNotPending:
                continue
        return expired

    def reverse(
        self,
        entry_id: int,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Write the mirror of a posted entry (every posting negated), linked to it.

        An entry can be reversed once (``AlreadyReversed`` after that). A
        reversal that would overdraw a no-overdraft account is refused with
        ``InsufficientFunds``, like any other entry.
        """
        check_entry_id(entry_id)
        _check_optional(idempotency_key, description)
        key = idempotency_key if idempotency_key is not None else f"reverse:{entry_id}"
        meta = check_json(metadata or {})
        request_hash = _fingerprint(
            "reverse", {"entry_id": entry_id, "description": description, "metadata": meta}
        )
        now = self.now()

        def run(conn: Connection) -> Entry:
            replay = self._replay_by_key(conn, key, request_hash)
            if replay is not None:
                return replay
            original = self._load_entry(conn, entry_id)
            if original is None:
                raise UnknownEntry(f"no entry {entry_id}", entry_id=entry_id)
            if original.phase is not EntryPhase.POSTED or not original.postings:
                raise InvalidEntry(
                    f"entry {entry_id} is {original.phase.value}: only posted entries can be "
                    "reversed (void a hold instead)",
                    entry_id=entry_id,
                )
            mirror = tuple(
                Posting(p.account, -p.amount_minor, p.currency) for p in original.postings
            )
            op = _Op(
                kind="reverse",
                mode="post",
                key=key,
                request_hash=request_hash,
                type=original.type,
                phase=EntryPhase.POSTED,
                description=description
                if description is not None
                else f"Reversal of #{entry_id}: {original.description}".rstrip(": "),
                metadata=meta,
                effective_at=now,
                recorded_at=now,
                postings=mirror,
                balance_postings=mirror,
                reverses_id=entry_id,
            )
            return self._record(conn, op)

        return self._write(run)

    @observed("store", "post", describe=entry_fields)
    def _submit(self, op: _Op, attach: _Attach | None = None) -> Entry:
        return self._write(lambda conn: self._record(conn, op, attach))

    def _post_with(
        self,
        draft: EntryDraft,
        *,
        request: Mapping[str, Any] | None,
        codes: Sequence[str],
        rows: Callable[[dict[str, Balance]], Sequence[Attached]],
    ) -> Entry:
        """``post``, and write the rows ``rows(balances)`` returns with the entry
        (an outbox event, an earning lot), each taking the entry's id.

        ``balances``: the balances of ``codes`` once this entry is posted, as
        ``balances(codes)`` would return them after it (the service's receipt,
        stored in its event, shows them). On PostgreSQL the entry, its postings
        and the rows are one statement (see ``_together.py``). A replay
        (``entry.replayed``) writes no row; a refusal writes nothing. ``request``:
        the service's fingerprint of the call, a plain dict it built from checked
        values (not checked again).
        """
        op = self._op_from_draft("post", draft, None, request, request_built=True)
        return self._submit(op, (codes, rows))

    def _execute(
        self, conn: Connection, statement: Any, params: dict[str, Any] | list[dict[str, Any]]
    ) -> CursorResult[Any]:
        """Execute a hot-path statement: with psycopg or pysqlite, as the driver's
        SQL compiled once (see ``Prepared``); otherwise (another driver, a
        connection with a ``schema_translate_map``, a statement ``prepare``
        refuses) as the Core statement."""
        dialect = conn.dialect
        if not self._driver_sql(conn):
            return conn.execute(statement, params)
        rows = params if isinstance(params, list) else [params]
        if not rows or not rows[0]:
            return conn.execute(statement, params)
        many = isinstance(params, list)
        key = (statement, dialect, tuple(rows[0]), many)
        prepared: Prepared | None = self._shared.prepared.get(key, _UNPREPARED)
        if prepared is _UNPREPARED:
            prepared = prepare(statement, dialect, tuple(rows[0]), many=many)
            if len(self._shared.prepared) < MAX_PREPARED:  # the library's few statements
                self._shared.prepared[key] = prepared
        if prepared is None:
            return conn.execute(statement, params)
        # The caller's parameters are its own: the prepared run fills in a copy.
        copies = [dict(row) for row in rows]
        return prepared.run(conn, copies if many else copies[0])

    @staticmethod
    def _driver_sql(conn: Connection) -> bool:
        """Whether hot statements may run as the driver's SQL on ``conn``: a driver of
        ``PREPARED_DRIVERS`` and no ``schema_translate_map`` (which only Core applies)."""
        return conn.dialect.driver in PREPARED_DRIVERS and not conn.get_execution_options().get(
            "schema_translate_map"
        )

    def _arrays(self, conn: Connection) -> bool:
        """Whether many-row inserts go as arrays (``ArrayInsert``): psycopg's driver SQL."""
        return conn.dialect.driver == "psycopg" and self._driver_sql(conn)

    def _insert_many(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        *,
        returning: Sequence[str] = (),
        core: Any = None,
        skip_taken: str | None = None,
    ) -> CursorResult[Any]:
        """Insert ``rows`` (the same columns each) into ``table``: with psycopg one
        statement of arrays (``ArrayInsert``, returning ``returning``; ``skip_taken``,
        a unique column: ``ON CONFLICT (it) DO NOTHING``); otherwise, or when a
        column the rows leave out has a Python-side default, ``core`` (the table's
        plain insert by default) as an executemany (with the same ``ON CONFLICT``
        and ``RETURNING``, if asked for)."""
        statement: ArrayInsert | None = None
        if self._arrays(conn):
            key = (table, tuple(rows[0]), tuple(returning), conn.dialect, skip_taken)
            statement = self._shared.arrays.get(key, _UNPREPARED)
            if statement is _UNPREPARED:
                statement = array_insert(
                    table, tuple(rows[0]), conn.dialect, returning, skip_taken=skip_taken
                )
                if len(self._shared.arrays) < MAX_PREPARED:
                    self._shared.arrays[key] = statement
        if statement is not None:
            return statement.run(conn, rows)
        # Not psycopg, or a column left to its Python default: Core's executemany.
        if skip_taken is None and not returning:
            return conn.execute(core if core is not None else plain_insert(table), list(rows))
        insert = table.insert()
        if skip_taken is not None and conn.dialect.name == "sqlite":
            from sqlalchemy.dialects import sqlite

            insert = sqlite.insert(table).on_conflict_do_nothing(index_elements=[skip_taken])
        elif skip_taken is not None:
            from sqlalchemy.dialects import postgresql

            insert = postgresql.insert(table).on_conflict_do_nothing(index_elements=[skip_taken])
        if returning:
            insert = insert.returning(*(table.c[name] for name in returning))
        return conn.execute(insert, list(rows))

    def _together(self, legs: int, attached: Sequence[Attached]) -> Any:
        """The one-statement write of an entry with ``legs`` postings and the
        ``attached`` rows, or None where it takes several (SQLite, long entries)."""
        if self._dialect != "postgresql" or not 1 <= legs <= MAX_LEGS_TOGETHER:
            return None
        shape = (legs, *(row.shape() for row in attached))
        statement = self._shared.together.get(shape)
        if statement is None:
            statement = entry_with_postings(self._tables, legs, attached)
            self._shared.together[shape] = statement
        return statement

    def _preview(
        self, conn: Connection, op: _Op, accounts: Mapping[str, _Acct], codes: Sequence[str]
    ) -> dict[str, Balance]:
        """The balances of ``codes`` as they will be once ``op`` is applied (nothing
        is written or checked here: the post itself refuses an overdraft)."""
        if self._mode == "unit":
            unit = self._unit
            missing = [code for code in codes if code not in unit.read]
            if missing:
                self._balances(conn, missing)
            now = self._unit_balances({code: unit.read[code] for code in codes})
        else:
            now = self._balances(conn, codes)
        code_of = {acct.id: code for code, acct in accounts.items()}
        deltas = _op_deltas(op, accounts)
        return _with_deltas(now, {code_of[account_id]: d for account_id, d in deltas.items()})

    def _replay_by_key(self, conn: Connection, key: str, request_hash: str) -> Entry | None:
        row = conn.execute(self._stmts["entry_by_key"], {"key": key}).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request",
                idempotency_key=key,
                entry_id=row.id,
            )
        entry = self._load_entry(conn, row.id)
        assert entry is not None
        return replace(entry, replayed=True)

    def _record(self, conn: Connection, op: _Op, attach: _Attach | None = None) -> Entry:
        accounts = self._resolve(conn, (p.account for p in op.balance_postings))
        for posting in op.balance_postings:
            acct = accounts[posting.account]
            if posting.currency != acct.currency:
                raise CurrencyMismatch(
                    f"posting of {posting.currency} to account {acct.code} held in {acct.currency}",
                    account=acct.code,
                    posting_currency=posting.currency,
                    account_currency=acct.currency,
                )
        params = _entry_row(op)
        attached: Sequence[Attached] = ()
        if attach is not None:
            codes, make_rows = attach
            attached = make_rows(self._preview(conn, op, accounts, codes))
        entry_id, written = self._insert_entry(conn, params, op, accounts, attached)
        if entry_id is None:
            replay = self._replay_by_key(conn, op.key, op.request_hash)
            if replay is not None:
                return replay
            if op.hold_id is not None:
                raise HoldNotPending(
                    f"hold {op.hold_id} was resolved concurrently", entry_id=op.hold_id
                )
            raise AlreadyReversed(
                f"entry {op.reverses_id} has already been reversed", entry_id=op.reverses_id
            )
        if not written:
            if op.postings:
                self._insert_postings(conn, entry_id, op, accounts)
            for row in attached:
                self._execute(conn, plain_insert(row.table), row.row(entry_id))
        self._apply(conn, op, accounts)
        return Entry(
            id=entry_id,
            type=op.type,
            phase=op.phase,
            postings=op.postings,
            idempotency_key=op.key,
            description=op.description,
            metadata=op.metadata,
            effective_at=op.effective_at,
            recorded_at=op.recorded_at,
            expires_at=op.expires_at,
            hold_id=op.hold_id,
            reverses_id=op.reverses_id,
        )

    def _insert_entry(
        self,
        conn: Connection,
        params: dict[str, Any],
        op: _Op,
        accounts: dict[str, _Acct],
        attached: Sequence[Attached],
    ) -> tuple[int | None, bool]:
        """Insert the entry (``params``; ``ON CONFLICT DO NOTHING``): its id, None
        when its key (or hold, or reversal) is taken, and whether its postings and
        the ``attached`` rows were written with it (PostgreSQL's one statement,
        where a taken key inserts none of them)."""
        statement = self._together(len(op.postings), attached)
        if statement is None:
            return self._execute(conn, self._stmts["insert_entry"], params).scalar(), False
        for i, p in enumerate(op.postings):
            params[f"account_{i}"] = accounts[p.account].id
            params[f"amount_{i}"] = p.amount_minor
            params[f"currency_{i}"] = p.currency
        for n, row in enumerate(attached):
            params.update(row.params(n))
        with self._unknown_account_on_fk(accounts, postings_only=True):
            return self._execute(conn, statement, params).scalar(), True

    def _insert_postings(
        self, conn: Connection, entry_id: int, op: _Op, accounts: dict[str, _Acct]
    ) -> None:
        with self._unknown_account_on_fk(accounts):
            self._execute(
                conn,
                self._stmts["insert_postings"],
                [
                    {
                        "entry_id": entry_id,
                        "account_id": accounts[p.account].id,
                        "amount": p.amount_minor,
                        "currency": p.currency,
                    }
                    for p in op.postings
                ],
            )

    @contextmanager
    def _unknown_account_on_fk(
        self, accounts: dict[str, _Acct], *, postings_only: bool = False
    ) -> Iterator[None]:
        """A failed foreign key of the postings' accounts as ``UnknownAccount``.
        ``postings_only``: the statement writes other rows too (PostgreSQL's one
        statement), so only that constraint is translated; any other integrity
        error is raised as it is."""
        try:
            yield
        except sa.exc.IntegrityError as exc:
            constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
            if postings_only and constraint != f"{self.prefix}postings_account_currency":
                raise
            # Only a cached account id that no longer exists (a host rolled
            # back the transaction that opened it) can fail the postings'
            # foreign key.
            self._shared.accounts.clear()
            raise UnknownAccount(
                "an account of this entry does not exist (was its opening rolled back?)",
                accounts=sorted(accounts),
            ) from exc

    def _apply(self, conn: Connection, op: _Op, accounts: dict[str, _Acct]) -> None:
        """Apply the op's deltas to balance rows in ascending (account, shard) order.

        Inside ``atomic()`` the deltas are only collected (after checking the
        no-overdraft rule against the balances plus the unit's earlier posts)
        and applied once when the unit ends: see :meth:`_end_unit`.
        """
        deltas = _op_deltas(op, accounts)
        by_id = {a.id: a for a in accounts.values()}
        if self._mode == "unit":
            self._collect(conn, deltas, by_id)
        else:
            self._apply_deltas(conn, deltas, by_id)

    def _collect(
        self, conn: Connection, deltas: dict[int, _Delta], by_id: dict[int, _Acct]
    ) -> None:
        """Add one post's deltas to the unit's, refusing an overdraft at the post itself."""
        unit = self._unit
        outflows = {
            account_id: _available_change(by_id[account_id], d)
            for account_id, d in deltas.items()
            if not by_id[account_id].allow_overdraft and _available_change(by_id[account_id], d) < 0
        }
        if outflows:
            # Balances the unit has read already are not read again: the check
            # at the end of the unit (the guarded update) is the one that counts.
            codes = [by_id[account_id].code for account_id in sorted(outflows)]
            missing = [code for code in codes if code not in unit.read]
            if missing:
                self._balances(conn, missing)
            now = self._unit_balances({code: unit.read[code] for code in codes})
            for account_id in sorted(outflows):
                acct = by_id[account_id]
                available = now[acct.code].available_minor
                if available + outflows[account_id] < 0:
                    self._refuse(acct, outflows[account_id], available)
        for account_id, d in deltas.items():
            unit.accounts[account_id] = by_id[account_id]
            total = unit.deltas.setdefault(account_id, _Delta())
            total.posted += d.posted
            total.pending_debit += d.pending_debit
            total.pending_credit += d.pending_credit

    def _end_unit(self, conn: Connection) -> None:
        """Apply the unit's collected deltas: every balance row it touches, once,
        in ascending (account, shard) order, one shard per account. Two units
        therefore never wait on each other in a cycle, however many posts each
        made and in whatever order."""
        unit = self._unit
        if not unit.deltas:
            return
        deltas, unit.deltas = unit.deltas, {}
        try:
            self._apply_deltas(conn, deltas, dict(unit.accounts))
        except BaseException:
            unit.failed = True
            raise

    def _unit_balances(self, found: dict[str, Balance]) -> dict[str, Balance]:
        """Balances as this unit of work sees them: stored rows plus its collected deltas."""
        unit = self._unit
        if self._mode == "unit":
            unit.read.update(found)
        if not unit.deltas:
            return found
        return _with_deltas(
            found, {unit.accounts[account_id].code: d for account_id, d in unit.deltas.items()}
        )

    def _apply_deltas(
        self, conn: Connection, deltas: Mapping[int, _Delta], by_id: Mapping[int, _Acct]
    ) -> None:
        """Write ``deltas`` to balance rows in ascending (account, shard) order.

        Rows go out in one executemany (see ``_flush`` for how a refusal is
        found among several guarded rows); an account with several shards that
        must not go below zero, or releases pending amounts, is written across
        its shards (``_apply_all_shards``) between them.
        """
        batch: list[dict[str, int]] = []
        guarded: list[_Guarded] = []
        for account_id in sorted(deltas):
            acct, d = by_id[account_id], deltas[account_id]
            if d.posted == 0 and d.pending_debit == 0 and d.pending_credit == 0:
                continue
            check_delta(acct.code, d.posted, d.pending_debit, d.pending_credit)
            sign = acct.kind.normal_sign
            pending_out_delta = d.pending_credit if sign > 0 else d.pending_debit
            reduces = sign * d.posted - pending_out_delta < 0
            checked = reduces and not acct.allow_overdraft
            releases = d.pending_debit < 0 or d.pending_credit < 0
            if acct.shards > 1 and (checked or releases):
                self._flush(conn, batch, guarded)
                self._apply_all_shards(conn, acct, d, checked)
                continue
            shard = 0 if acct.shards == 1 else self._shared.rng.randrange(acct.shards)
            params = {
                "b_account": account_id,
                "b_shard": shard,
                "d_posted": d.posted,
                "d_pd": d.pending_debit,
                "d_pc": d.pending_credit,
            }
            batch.append(params)
            if checked:
                guarded.append(_Guarded(acct, sign * d.posted - pending_out_delta, len(batch) - 1))
        self._flush(conn, batch, guarded)

    def _flush(
        self, conn: Connection, batch: list[dict[str, int]], guarded: list[_Guarded]
    ) -> None:
        """Update the rows of ``batch`` in one executemany (one round trip with
        psycopg's pipeline), then empty ``batch`` and ``guarded``. Every row is
        guarded (``allow_overdraft OR available after >= 0``); ``guarded`` lists
        the rows that can fail it (a no-overdraft account whose available goes
        down). A row left unchanged is that account short of funds or an account
        that no longer exists.

        To name the account a refusal is for, each executemany may hold one
        guarded row. A unit with more (a batch of gifts from many wallets) would
        then cost a round trip per wallet, so from ``GROUPED_GUARDS`` guarded
        rows on they go together: with psycopg in one statement of arrays that
        returns the rows it updated (``_update_arrays``: a refused row is named
        from them); otherwise in one executemany inside a SAVEPOINT (two
        statements more): if a row is refused, the savepoint is rolled back and
        the rows are written again one guarded row at a time, which names it.
        """
        if not batch:
            return
        grouped = len(guarded) >= GROUPED_GUARDS
        if grouped and self._arrays(conn):
            self._update_arrays(conn, batch, guarded)
            batch.clear()
            guarded.clear()
            return
        if grouped:
            savepoint = conn.begin_nested()
            try:
                with translate_overflow(self.prefix):  # several accounts: names none
                    result = self._execute(conn, self._stmts["update_balance_checked"], batch)
            except BaseException:
                savepoint.rollback()
                raise
            if result.rowcount == len(batch):
                savepoint.commit()
                batch.clear()
                guarded.clear()
                return
            savepoint.rollback()
        # One executemany per guarded row (the rows before it go with it).
        start = 0
        for n, guard in enumerate(guarded):
            end = len(batch) if n == len(guarded) - 1 else guard.row + 1
            self._update_rows(conn, batch[start:end], guard)
            start = end
        self._update_rows(conn, batch[start:], None)  # no guarded row: empty then
        batch.clear()
        guarded.clear()

    def _update_arrays(
        self, conn: Connection, batch: list[dict[str, int]], guarded: list[_Guarded]
    ) -> None:
        """psycopg: the rows of ``batch`` in one statement of arrays (``balances_update``:
        one execution, not one per row, and no savepoint), which returns the rows
        it updated. A guarded row it left out is refused (named, as
        ``_update_rows`` names it); any other row left out is an account that no
        longer exists. The rows it did update are rolled back with the unit."""
        statement = self._shared.balances_update.get(conn.dialect)
        if statement is None:
            statement = balances_update(self._tables.balances, conn.dialect)
            if len(self._shared.balances_update) < MAX_PREPARED:
                self._shared.balances_update[conn.dialect] = statement
        with translate_overflow(self.prefix):  # several accounts: names none
            updated = statement.run(conn, batch)
        if len(updated) == len(batch):
            return
        left = [row for row in batch if (row["b_account"], row["b_shard"]) not in updated]
        if self._rows_exist(conn, left):  # every row left out is there: refused
            for guard in guarded:
                if batch[guard.row] in left:
                    now = self._balances(conn, [guard.acct.code])[guard.acct.code]
                    self._refuse(guard.acct, guard.change, now.available_minor)
        self._shared.accounts.clear()
        raise UnknownAccount("an account of this entry no longer exists")

    def _update_rows(
        self,
        conn: Connection,
        rows: list[dict[str, int]],
        guard: _Guarded | None,
        account: str | None = None,
    ) -> None:
        """One executemany of ``rows``, of which at most ``guard`` can be refused.
        ``account``: the one account whose shard rows ``rows`` are, named by a
        ``BalanceOverflow``."""
        if not rows:
            return
        with translate_overflow(self.prefix, account):
            result = self._execute(conn, self._stmts["update_balance_checked"], rows)
        if result.rowcount != len(rows):
            if guard is not None and self._rows_exist(conn, rows):
                # Every row is there, so the guard refused the guarded one: its
                # balance went down since this unit read it (on PostgreSQL another
                # transaction committed in between). The error gives the balance as
                # it is now, which shows a deposit committed since the refusal too.
                now = self._balances(conn, [guard.acct.code])[guard.acct.code]
                self._refuse(guard.acct, guard.change, now.available_minor)
            self._shared.accounts.clear()
            raise UnknownAccount("an account of this entry no longer exists")

    def _apply_all_shards(self, conn: Connection, acct: _Acct, d: _Delta, checked: bool) -> None:
        """Lock every shard of ``acct`` and spread the deltas so no shard breaks a rule.

        ``d`` may combine several posts of a unit of work. Releases of pending
        amounts come from the shards that hold them; then outflows (posted, or
        new pending holds out) are taken from the shards with the most
        available, inflows land on the first shard. A no-overdraft account
        that cannot cover the outflows is refused.
        """
        rows = conn.execute(self._stmts["lock_shards"], {"b_account": acct.id}).all()
        if not rows:
            self._shared.accounts.clear()
            raise UnknownAccount(f"account {acct.code} no longer exists", account=acct.code)
        sign = acct.kind.normal_sign
        first = rows[0].shard
        # Per shard: [posted, pending_debit, pending_credit] deltas.
        change = {r.shard: [0, 0, 0] for r in rows}
        held = {r.shard: [r.posted, r.pending_debit, r.pending_credit] for r in rows}
        for column, delta in ((1, d.pending_debit), (2, d.pending_credit)):
            if delta >= 0:
                continue
            remaining = -delta
            for shard in sorted(held, key=lambda s: -held[s][column]):
                take = min(held[shard][column], remaining)
                change[shard][column] -= take
                remaining -= take
            if remaining:
                raise SchemaError(
                    f"balance rows of {acct.code} hold less pending than an open hold; run verify()"
                )
        out_column = 2 if sign > 0 else 1
        in_column = 3 - out_column
        pending = (0, d.pending_debit, d.pending_credit)
        if pending[in_column] > 0:
            change[first][in_column] += pending[in_column]
        available = {
            s: sign * (v[0] + change[s][0]) - (v[out_column] + change[s][out_column])
            for s, v in held.items()
        }
        needs = []
        if sign * d.posted >= 0:
            change[first][0] += d.posted
            available[first] += sign * d.posted
        else:
            needs.append((-sign * d.posted, 0))
        if pending[out_column] > 0:
            needs.append((pending[out_column], out_column))
        if checked:
            total = sum(max(v, 0) for v in available.values())
            need = sum(n for n, _ in needs)
            if total < need:
                self._refuse(acct, -need, total)
        for need, column in needs:
            remaining = need
            for shard in sorted(available, key=lambda s: -available[s]):
                take = min(max(available[shard], 0), remaining)
                if take:
                    change[shard][column] += -sign * take if column == 0 else take
                    available[shard] -= take
                    remaining -= take
            if remaining:  # an account that may be overdrawn: the rest on one shard
                change[first][column] += -sign * remaining if column == 0 else remaining
        self._update_rows(
            conn,
            [
                {
                    "b_account": acct.id,
                    "b_shard": shard,
                    "d_posted": v[0],
                    "d_pd": v[1],
                    "d_pc": v[2],
                }
                for shard, v in sorted(change.items())
                if v != [0, 0, 0]
            ],
            None,
            account=acct.code,
        )

    def _rows_exist(self, conn: Connection, batch: list[dict[str, int]]) -> bool:
        """Every (account, shard) balance row of ``batch`` is there (a refusal path only)."""
        b = self._tables.balances
        wanted = {(row["b_account"], row["b_shard"]) for row in batch}
        found = conn.execute(
            sa.select(b.c.account_id, b.c.shard).where(
                b.c.account_id.in_(sorted({account for account, _ in wanted}))
            )
        ).all()
        return wanted <= {(int(a), int(shard)) for a, shard in found}

    def _refuse(self, acct: _Acct, change_minor: int, available_minor: int) -> NoReturn:
        """Refuse an entry for want of funds; every caller has read ``available_minor``."""
        raise InsufficientFunds(
            f"account {acct.code} has {available_minor} {acct.currency} minor units available; "
            f"the entry needs {-change_minor}",
            account=acct.code,
            available_minor=available_minor,
            required_minor=-change_minor,
            currency=acct.currency,
        )

    # -- reads ------------------------------------------------------------------

    def balance(self, account: str) -> Balance:
        """An account's balance (posted, pending, available), O(1) in its history."""
        return self.balances([account])[account]

    def balances(self, accounts: Iterable[str]) -> dict[str, Balance]:
        """Balances of several accounts in one query."""
        codes = [check_account_code(code) for code in accounts]
        if self._mode == "unit" and all(code in self._unit.read for code in codes):
            # Read earlier in this unit (the service layer reads before it
            # posts): the stored values then plus the unit's own changes.
            return self._unit_balances({code: self._unit.read[code] for code in codes})
        return self._read(lambda conn: self._balances(conn, codes))

    def _known(
        self, conn: Connection, codes: Sequence[str], *, single: bool = False
    ) -> dict[str, _Acct]:
        """``_resolve`` for reads: an unknown account is ``no account X`` (as ever)."""
        try:
            return self._resolve(conn, codes)
        except UnknownAccount as exc:
            unknown = list(exc.details.get("accounts", codes))
            if single:
                raise UnknownAccount(f"no account {unknown[0]}", account=unknown[0]) from None
            raise UnknownAccount(f"no account {', '.join(unknown)}", accounts=unknown) from None

    def _balances(self, conn: Connection, codes: Sequence[str]) -> dict[str, Balance]:
        # The account facts come from the cache of immutable accounts; the
        # balance rows are read by primary key (see _reads.py).
        accounts = self._known(conn, codes)
        sums = _reads.balance_sums(conn, self._reads, [acct.id for acct in accounts.values()])
        return self._balances_from(accounts, sums)

    def _balances_joined(
        self, codes: Sequence[str], query: Any, params: Mapping[str, Any]
    ) -> tuple[dict[str, Balance], list[Any]]:
        """Inside ``atomic()``: the balances of ``codes`` read by ``query``, which a
        service extends with a row it needs too (the gift's streamer), so one
        round trip reads both. ``query`` selects ``account_id, posted,
        pending_debit, pending_credit`` first, one row per balance row of the
        accounts, and may add columns after them (an outer join on the
        service's row). The accounts' ids are the parameters ``id0``, ``id1``...
        in the order of ``codes``
        (a fixed list: no expanding parameter to render per call). Returns the
        balances as the unit sees them and the rows; later ``balances()`` of
        these codes in the unit read nothing."""
        if self._mode != "unit":
            raise InvalidInput("_balances_joined() is only for a unit of work inside atomic()")
        conn = self._host_connection()
        wanted = [check_account_code(code) for code in codes]
        accounts = self._known(conn, wanted)
        ids = {f"id{i}": accounts[code].id for i, code in enumerate(wanted)}
        rows: list[Any] = list(self._execute(conn, query, {**params, **ids}).all())
        return self._balances_from(accounts, _reads.sum_shards(rows)), rows

    def _balances_from(
        self, accounts: Mapping[str, _Acct], sums: Mapping[int, list[int]]
    ) -> dict[str, Balance]:
        found = {}
        for code, acct in accounts.items():
            if acct.id not in sums:  # opened with its rows: gone means a damaged database
                raise UnknownAccount(f"account {code} no longer exists", account=code)
            posted, pending_debit, pending_credit = sums[acct.id]
            found[code] = Balance.from_raw(
                code,
                acct.kind,
                acct.currency,
                posted=int(posted),
                pending_debit=int(pending_debit),
                pending_credit=int(pending_credit),
            )
        return self._unit_balances(found)

    def balance_as_of(self, account: str, at: datetime) -> Balance:
        """The posted balance as of ``at`` (entries with ``effective_at <= at``).

        Pending amounts are not historical: the result has none.
        """
        code = check_account_code(account)
        at = _aware(at, "at")
        e, p = self._tables.entries, self._tables.postings

        def run(conn: Connection) -> Balance:
            acct = self._load_account(conn, code)
            if acct is None:
                raise UnknownAccount(f"no account {code}", account=code)
            total = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(p.c.amount), 0))
                .join(e, e.c.id == p.c.entry_id)
                .where(p.c.account_id == acct.id, e.c.phase == "posted", e.c.effective_at <= at)
            ).scalar_one()
            return Balance.from_raw(
                code,
                acct.kind,
                acct.currency,
                posted=int(total),
                pending_debit=0,
                pending_credit=0,
            )

        return self._read(run)

    def entry(self, entry_id: int) -> Entry:
        """The entry with this id (``UnknownEntry`` if none)."""
        check_entry_id(entry_id)
        found = self._read(lambda conn: self._load_entry(conn, entry_id))
        if found is None:
            raise UnknownEntry(f"no entry {entry_id}", entry_id=entry_id)
        return found

    def entry_by_key(self, idempotency_key: str) -> Entry:
        """The entry recorded under this idempotency key (``UnknownEntry`` if none)."""
        check_text(idempotency_key, "idempotency_key", max_length=MAX_KEY_COLUMN)
        e = self._tables.entries

        def run(conn: Connection) -> Entry | None:
            entry_id = conn.execute(
                sa.select(e.c.id).where(e.c.idempotency_key == idempotency_key)
            ).scalar()
            return None if entry_id is None else self._load_entry(conn, entry_id)

        found = self._read(run)
        if found is None:
            raise UnknownEntry(
                f"no entry with idempotency key {idempotency_key!r}",
                idempotency_key=idempotency_key,
            )
        return found

    def hold_status(self, hold_id: int) -> EntryPhase:
        """``pending`` while open, else how it was resolved (posted, voided, expired)."""
        check_entry_id(hold_id, "hold_id")
        return self._read(lambda conn: self._hold_status(conn, hold_id))

    def _hold_status(self, conn: Connection, hold_id: int) -> EntryPhase:
        e = self._tables.entries
        phase = conn.execute(sa.select(e.c.phase).where(e.c.hold_id == hold_id)).scalar()
        return EntryPhase.PENDING if phase is None else EntryPhase(phase)

    def _load_entry(self, conn: Connection, entry_id: int) -> Entry | None:
        found = self._load_entries(conn, [entry_id])
        return found[0] if found else None

    def _load_entries(self, conn: Connection, entry_ids: Sequence[int]) -> list[Entry]:
        if not entry_ids:
            return []
        ids = {"ids": list(entry_ids)}
        rows = sorted(conn.execute(self._reads.entry_rows, ids), key=lambda r: r.id)
        legs: dict[int, list[Posting]] = defaultdict(list)
        for r in conn.execute(self._reads.entry_legs, ids):
            legs[r.entry_id].append(Posting(r.code, r.amount, r.currency))
        return [_entry_from_row(r, tuple(legs[r.id])) for r in rows]

    def iter_entries(self, *, batch_size: int = 1000, after_id: int = 0) -> Iterator[Entry]:
        """Every entry in id order, fetched ``batch_size`` at a time (for exports)."""
        check_int(batch_size, "batch_size", minimum=1, maximum=100_000)
        check_int(after_id, "after_id", minimum=0, maximum=MAX_ENTRY_ID)
        e = self._tables.entries
        last = after_id
        while True:

            def page(conn: Connection, last: int = last) -> list[Entry]:
                ids = list(
                    conn.execute(
                        sa.select(e.c.id).where(e.c.id > last).order_by(e.c.id).limit(batch_size)
                    ).scalars()
                )
                return self._load_entries(conn, ids)

            entries = self._read(page)
            if not entries:
                return
            yield from entries
            last = entries[-1].id

    def count_entries(self) -> int:
        e = self._tables.entries
        return self._read(
            lambda conn: int(conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one())
        )

    def history(
        self,
        account: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> HistoryPage:
        """Postings on ``account``, newest first, ``limit`` per page.

        Keyset pagination on the posting id: pages never shift or repeat when
        new entries arrive. Filter by entry ``types`` and by ``effective_at``
        (``since <= t < until``). Pass ``next_cursor`` back for the next page.
        """
        code = check_account_code(account)
        page = _PageQuery.of(
            "history", [code], limit=limit, cursor=cursor, types=types, since=since, until=until
        )
        reads = self._reads

        def run(conn: Connection) -> HistoryPage:
            acct = self._known(conn, [code], single=True)[code]
            rows = _reads.history_rows(
                conn,
                reads,
                acct.id,
                before=page.before,
                limit=limit + 1,
                types=page.types,
                since=page.since,
                until=page.until,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            items = _reads.history_items(
                conn,
                reads,
                self._codes,
                account=(acct.id, code, acct.kind.normal_sign),
                rows=rows,
                cache_codes=self._mode == "engine",
            )
            next_cursor = _encode_cursor(items[-1].posting_id, page.query_id) if more else None
            return HistoryPage(items, next_cursor)

        return self._read(run)

    def entries_page(
        self,
        accounts: Sequence[str],
        *,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> EntryPage:
        """Entries touching any of ``accounts``, newest first, whole (every posting).

        The entry-level view of history: a statement for a holder of several
        accounts (a streamer's pending, payable and in-payout earnings) lists
        each movement once. Same keyset pagination and filters as ``history``.
        """
        codes = sorted({check_account_code(code) for code in accounts})
        if not codes:
            raise InvalidInput("entries_page needs at least one account")
        # "/2": the cursor is a posting position now, not an entry id.
        page = _PageQuery.of(
            "entries_page/2",
            codes,
            limit=limit,
            cursor=cursor,
            types=types,
            since=since,
            until=until,
        )
        reads = self._reads

        def run(conn: Connection) -> EntryPage:
            ids = [acct.id for acct in self._known(conn, codes).values()]
            found = _reads.statement_page(
                conn,
                reads,
                ids,
                before=page.before,
                limit=limit,
                types=page.types,
                since=page.since,
                until=page.until,
            )
            phases = _PHASES
            legs = found.legs
            code_of = _reads.account_codes(
                conn,
                reads,
                self._codes,
                {leg[1] for entry_legs in legs.values() for leg in entry_legs},
                cache=self._mode == "engine",
            )
            # Newest first by position (the newest posting on the accounts).
            entries = tuple(
                Entry(
                    entry_id,
                    type_,
                    phases[phase],
                    tuple(
                        [stored_posting(code_of[leg[1]], leg[3], leg[4]) for leg in legs[entry_id]]
                    ),
                    key,
                    description,
                    metadata,
                    effective_at,
                    recorded_at,
                    expires_at,
                    hold_id,
                    reverses_id,
                )
                for (
                    _position,
                    entry_id,
                    type_,
                    phase,
                    key,
                    description,
                    metadata,
                    effective_at,
                    recorded_at,
                    expires_at,
                    hold_id,
                    reverses_id,
                ) in found.rows
            )
            holds = [x.id for x in entries if x.phase is EntryPhase.PENDING]
            status = dict.fromkeys(holds, EntryPhase.PENDING)
            for hold_id, phase in _reads.hold_resolutions(conn, reads, holds).items():
                status[hold_id] = EntryPhase(phase)
            next_cursor = _encode_cursor(found.rows[-1][0], page.query_id) if found.more else None
            return EntryPage(entries, next_cursor, status)

        return self._read(run)

    def trial_balance(self) -> TrialBalance:
        """Posted balances of every account; per currency, debits equal credits."""
        a, b = self._tables.accounts, self._tables.balances
        query = (
            sa.select(a.c.code, a.c.kind, a.c.currency, sa.func.sum(b.c.posted).label("posted"))
            .join(b, b.c.account_id == a.c.id)
            .group_by(a.c.id, a.c.code, a.c.kind, a.c.currency)
            .order_by(a.c.code)
        )
        rows = self._read(lambda conn: conn.execute(query).all())
        return TrialBalance(
            tuple(
                TrialBalanceRow(
                    account=r.code,
                    kind=AccountKind(r.kind),
                    currency=r.currency,
                    debit_minor=max(int(r.posted), 0),
                    credit_minor=max(-int(r.posted), 0),
                )
                for r in rows
            )
        )

    def verify(
        self,
        *,
        on_progress: Callable[[str, int, int], None] | None = None,
        incremental: bool = False,
    ) -> VerifyReport:
        """Recompute every balance from postings and check every invariant.

        Returns a report of what is wrong (values, not a crash); ``report.ok``
        is true for a healthy ledger. ``on_progress(step, done, total)`` is
        called as the checks proceed (the CLI draws a progress bar with it).

        ``incremental=True`` re-checks only what was written since the last
        verified checkpoint (in full the first time) and, when nothing is
        wrong, moves the checkpoint forward: its cost follows the new
        entries, not the history. The default re-checks everything.
        """
        if incremental:
            return _verify_incremental(self, on_progress)
        return self._read(
            lambda conn: verify_ledger(conn, self._tables, on_progress), snapshot=True
        )


def _verify_incremental(
    ledger: Ledger, on_progress: Callable[[str, int, int], None] | None
) -> VerifyReport:
    t = ledger.tables
    if ledger._mode == "engine":
        # A horizon no write in flight can fall under (see _checkpoint.py).
        horizon = ledger._write(lambda conn: _checkpoint.read_horizon(conn, t, lock=True))
    else:
        horizon = ledger._read(lambda conn: _checkpoint.read_horizon(conn, t, lock=False))
    report, base, changed = ledger._read(
        lambda conn: _checkpoint.run_verify(conn, t, horizon, on_progress), snapshot=True
    )
    if report.ok:
        now = ledger.now()
        ledger._write(
            lambda conn: _checkpoint.save_checkpoint(
                conn,
                t,
                base=None if base is None else base.horizon,
                horizon=horizon,
                changed=changed,
                now=now,
            )
        )
    assert isinstance(report, VerifyReport)
    return report


def _spec_dict(spec: AccountSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind.value,
        "currency": spec.currency,
        "allow_overdraft": spec.allow_overdraft,
        "balance_shards": spec.balance_shards,
        "metadata": dict(spec.metadata),
    }


def _account_from_row(row: Row[Any]) -> Account:
    return Account(
        id=row.id,
        code=row.code,
        kind=AccountKind(row.kind),
        currency=row.currency,
        allow_overdraft=row.allow_overdraft,
        balance_shards=row.balance_shards,
        metadata=row.metadata,
        created_at=row.created_at,
    )


_PHASES = {phase.value: phase for phase in EntryPhase}


def _entry_from_row(row: Row[Any], postings: tuple[Posting, ...]) -> Entry:
    return Entry(
        id=row.id,
        type=row.type,
        phase=EntryPhase(row.phase),
        postings=postings,
        idempotency_key=row.idempotency_key,
        description=row.description,
        metadata=row.metadata,
        effective_at=row.effective_at,
        recorded_at=row.recorded_at,
        expires_at=row.expires_at,
        hold_id=row.hold_id,
        reverses_id=row.reverses_id,
    )


@dataclass(frozen=True, slots=True)
class _PageQuery:
    """A history query's validated filters, and the cursor it continues from."""

    types: list[str] | None
    since: datetime | None
    until: datetime | None
    query_id: str
    """Ties a cursor to the query that issued it."""
    before: int | None

    @classmethod
    def of(
        cls,
        kind: str,
        codes: Sequence[str],
        *,
        limit: object,
        cursor: str | None,
        types: Iterable[str] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> _PageQuery:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an int from 1 to {MAX_PAGE}")
        type_list = check_types(types)
        since = _aware(since, "since") if since is not None else None
        until = _aware(until, "until") if until is not None else None
        query_id = _fingerprint(
            kind,
            {
                "accounts": list(codes),
                "types": type_list,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            },
        )[:16]
        before = _decode_cursor(cursor, query_id) if cursor is not None else None
        return cls(type_list, since, until, query_id, before)

    def filter(self, query: Any, key: Any, entries: sa.Table) -> Any:
        """Apply the cursor (on ``key``, the page's order column) and the filters."""
        if self.before is not None:
            query = query.where(key < self.before)
        if self.types is not None:
            query = query.where(entries.c.type.in_(self.types))
        if self.since is not None:
            query = query.where(entries.c.effective_at >= self.since)
        if self.until is not None:
            query = query.where(entries.c.effective_at < self.until)
        return query


def _encode_cursor(posting_id: int, query_id: str) -> str:
    return encode_cursor(posting_id, query_id)


def _decode_cursor(cursor: str, query_id: str) -> int:
    return decode_cursor(cursor, query_id)


def _check_optional(key: object, description: object) -> None:
    """An optional idempotency key and description of a hold resolution or reversal."""
    if key is not None:
        check_text(key, "idempotency_key", max_length=MAX_KEY_COLUMN)
    if description is not None:
        check_text(description, "description", max_length=1000, min_length=0)
