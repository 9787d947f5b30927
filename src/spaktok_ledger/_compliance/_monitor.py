"""Transaction monitoring: rules see each money movement inside its own transaction.

A *movement* is a purchase credit, a gift, a payout request, a refund or a
dispute. The services hand each one to the :class:`Monitor` in the database
transaction that writes it; every rule whose ``kinds`` include the movement's
kind gets a read-only :class:`Facts` view of that transaction and answers
``None`` (nothing to say) or a :class:`Verdict`:

- ``ALLOW``: nothing to do;
- ``HOLD``: the movement goes through but is reviewed: a case is opened (one
  open case per rule and subject); a purchase's coins are credited as
  pending, and a payout waits in ``review`` while its streamer has any open
  case, so it is never in flight before a person has looked at it;
- ``REFUSE``: the movement is refused (``MonitoringRefused``): its
  transaction rolls back, and the case that records the refusal is written
  on its own. Refunds and disputes cannot be refused (they already
  happened): a ``REFUSE`` verdict on them opens a case like ``HOLD``.

Rules are a port: anything with ``name``, ``kinds`` and ``evaluate`` works,
see :class:`MonitoringRule`. The shipped rules are in ``_rules.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._sql import insert_for
from spaktok_ledger._domain import Json, check_json
from spaktok_ledger._errors import InvalidInput, MonitoringRefused
from spaktok_ledger._store._schema import LedgerTables

__all__ = [
    "GIFT_BUCKET_SECONDS",
    "Check",
    "EvidenceQuery",
    "Facts",
    "Monitor",
    "MonitoringRule",
    "Movement",
    "MovementKind",
    "Outcome",
    "Prefetch",
    "Totals",
    "Verdict",
    "refusal",
]

T = TypeVar("T")
GIFT_BUCKET_SECONDS: Final = 300
"""Gifts are counted per (sender, streamer, 5-minute bucket): one row per burst."""
_CHUNK: Final = 500
_EVIDENCE_LIMIT: Final = 50


class Outcome(StrEnum):
    """What a rule asks for."""

    ALLOW = "allow"
    HOLD = "hold"
    REFUSE = "refuse"


class MovementKind(StrEnum):
    """The money movements the rules watch."""

    PURCHASE = "purchase"
    """Coins credited for a confirmed payment (``GiftEconomy.credit_purchase``)."""
    GIFT = "gift"
    PAYOUT = "payout"
    """A streamer's payout request."""
    REFUND = "refund"
    DISPUTE = "dispute"
    """A chargeback: the coins of a disputed purchase clawed back."""
    SCREENING = "screening"
    """Not a movement: a screening result that opens a case (no rule watches it)."""


REFUSABLE: Final = frozenset({MovementKind.PURCHASE, MovementKind.GIFT, MovementKind.PAYOUT})


@dataclass(frozen=True, slots=True)
class Movement:
    """A money movement as the rules see it (US cents)."""

    kind: MovementKind
    party_id: str
    """Who moves money: the payer (purchase, gift, refund, dispute) or the streamer (payout)."""
    amount_usd_minor: int
    at: datetime
    counterparty_id: str | None = None
    """A gift's streamer."""
    reference: str | None = None
    """The purchase, payout or gift it is (``pur_...``, ``pyt_...``, the gift's key)."""

    def to_dict(self) -> dict[str, Json]:
        return {
            "kind": self.kind.value,
            "party_id": self.party_id,
            "counterparty_id": self.counterparty_id,
            "amount_usd_minor": self.amount_usd_minor,
            "reference": self.reference,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    """The journal entries that back a verdict, looked up only when a case is opened.

    Entries of ``types`` with a posting on one of ``accounts``, effective at or
    after ``since``, newest first, at most ``limit``.
    """

    accounts: tuple[str, ...]
    types: tuple[str, ...]
    since: datetime
    limit: int = _EVIDENCE_LIMIT


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer about one movement."""

    outcome: Outcome
    rule: str
    """The rule's stable name (cases are per rule and subject)."""
    subject_id: str
    """Who the case is about: the payer or the streamer."""
    reason: str
    """For the reviewer: what the rule saw, in words."""
    subject_role: str = "payer"
    """``payer`` or ``streamer``: a payout waits while its streamer has an open case."""
    evidence_entry_ids: tuple[int, ...] = ()
    evidence: EvidenceQuery | None = None
    """Where to find more evidence entries (looked up only for a new case)."""
    facts: Mapping[str, Json] = field(default_factory=dict)
    """The figures the rule compared (counts, amounts, thresholds), for the case."""


@dataclass(frozen=True, slots=True)
class Totals:
    """How many movements and how much money (US cents)."""

    count: int = 0
    amount_usd_minor: int = 0


@dataclass(frozen=True, slots=True)
class Prefetch:
    """What a rule reads on every movement of its kinds, declared so that the monitor
    reads it for all rules in one round trip (an optional attribute of a rule)."""

    totals: tuple[tuple[MovementKind, timedelta], ...] = ()
    """``facts.totals(kind, movement.party_id, movement.at - window)`` for each pair."""
    links: bool = False
    """``facts.linked(movement.party_id, movement.counterparty_id)``."""


@runtime_checkable
class MonitoringRule(Protocol):
    """A monitoring rule: a host's own rules implement this, next to the shipped ones.

    ``evaluate`` must only read (``facts`` offers no writes) and be quick on
    the kinds it watches: it runs inside the movement's transaction, and for
    gifts on every gift. A rule may also have a ``prefetch`` attribute (a
    :class:`Prefetch`) naming the facts it reads on every movement.

    >>> class NoGiftsToBob:
    ...     name = "no_gifts_to_bob"
    ...     kinds = frozenset({MovementKind.GIFT})
    ...     def evaluate(self, movement, facts):
    ...         if movement.counterparty_id == "bob":
    ...             return Verdict(Outcome.REFUSE, self.name, movement.party_id, "bob is closed")
    ...         return None
    >>> isinstance(NoGiftsToBob(), MonitoringRule)
    True
    """

    @property
    def name(self) -> str:
        """A stable name (cases are per rule and subject; keep it when tuning)."""

    @property
    def kinds(self) -> frozenset[MovementKind]:
        """The movements it looks at."""

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        """``None`` (nothing to say) or a verdict, from reads through ``facts`` only."""


class _Statements:
    """The monitor's hot-path statements, built once (SQLAlchemy then reuses their
    compiled form and cache keys, as the ledger does for its own writes)."""

    def __init__(self, tables: LedgerTables) -> None:
        a, clusters = tables.compliance.activity, tables.compliance.clusters
        bp = sa.bindparam
        self._a, self._clusters = a, clusters
        self.totals = sa.select(
            sa.func.coalesce(sa.func.sum(a.c.count), 0),
            sa.func.coalesce(sa.func.sum(a.c.amount_usd_minor), 0),
        ).where(a.c.party_id == bp("party"), a.c.kind == bp("kind"), a.c.bucket_at >= bp("since"))
        self.clusters = sa.select(clusters.c.party_id, clusters.c.cluster_id).where(
            clusters.c.party_id.in_(bp("parties", expanding=True))
        )
        self._primes: dict[tuple[int, bool], sa.Select[Any]] = {}
        self._upserts: dict[str, Any] = {}

    def prime(self, windows: int, links: bool) -> sa.Select[Any]:
        """One row: (count, amount) for ``windows`` windows, then both parties' clusters."""
        key = (windows, links)
        if key not in self._primes:
            a, c, bp = self._a, self._clusters, sa.bindparam
            columns: list[Any] = []
            for i in range(windows):
                where = (
                    a.c.party_id == bp("party"),
                    a.c.kind == bp(f"kind{i}"),
                    a.c.bucket_at >= bp(f"since{i}", type_=a.c.bucket_at.type),
                )
                columns += [
                    sa.select(sa.func.coalesce(sa.func.sum(a.c.count), 0))
                    .where(*where)
                    .scalar_subquery(),
                    sa.select(sa.func.coalesce(sa.func.sum(a.c.amount_usd_minor), 0))
                    .where(*where)
                    .scalar_subquery(),
                ]
            if links:
                for name in ("party", "other"):
                    columns.append(
                        sa.select(c.c.cluster_id)
                        .where(c.c.party_id == bp(f"{name}_id"))
                        .scalar_subquery()
                    )
            self._primes[key] = sa.select(*columns)
        return self._primes[key]

    def upsert(self, conn: Connection) -> Any:
        """Count a movement in its activity row (insert, or add to the bucket's row)."""
        dialect = conn.dialect.name
        if dialect not in self._upserts:
            a, bp = self._a, sa.bindparam
            insert = insert_for(conn, a).values(
                kind=bp("kind"),
                party_id=bp("party"),
                counterparty_id=bp("other"),
                bucket_at=bp("bucket", type_=a.c.bucket_at.type),
                count=1,
                amount_usd_minor=bp("amount"),
                last_at=bp("at", type_=a.c.last_at.type),
            )
            self._upserts[dialect] = insert.on_conflict_do_update(
                index_elements=[a.c.party_id, a.c.kind, a.c.bucket_at, a.c.counterparty_id],
                set_={
                    "count": a.c.count + 1,
                    "amount_usd_minor": a.c.amount_usd_minor + insert.excluded.amount_usd_minor,
                    "last_at": insert.excluded.last_at,
                },
            )
        return self._upserts[dialect]


class Facts:
    """A read-only view of what the ledger knows, inside the movement's transaction.

    Every method is one indexed query, memoised for the movement, so rules
    that need the same figure share it. Amounts are US cents; gifts are
    counted in 5-minute buckets, so a window's start is rounded down to one.
    """

    def __init__(
        self,
        conn: Connection,
        tables: LedgerTables,
        now: datetime,
        statements: _Statements | None = None,
    ) -> None:
        self._conn = conn
        self._t = tables
        self._c = tables.compliance
        self._sql = statements or _Statements(tables)
        self.now = now
        self._memo: dict[tuple[Any, ...], Any] = {}

    def prime(self, movement: Movement, prefetch: Prefetch) -> None:
        """Read what the rules declared (:class:`Prefetch`) in one query."""
        links = prefetch.links and movement.counterparty_id is not None
        if not prefetch.totals and not links:
            return
        params: dict[str, Any] = {"party": movement.party_id}
        for i, (kind, window) in enumerate(prefetch.totals):
            params[f"kind{i}"] = kind.value
            params[f"since{i}"] = movement.at - window
        if links:
            params["party_id"] = movement.party_id
            params["other_id"] = movement.counterparty_id
        row = self._conn.execute(self._sql.prime(len(prefetch.totals), links), params).one()
        for i, (kind, window) in enumerate(prefetch.totals):
            since = movement.at - window
            total = Totals(int(row[2 * i]), int(row[2 * i + 1]))
            self._memo[("totals", kind, movement.party_id, since)] = total
        if links:
            other = movement.counterparty_id
            mine, theirs = row[-2], row[-1]
            self._memo[("cluster", movement.party_id)] = mine
            self._memo[("cluster", other)] = theirs
            linked = mine is not None and mine == theirs
            self._memo[("linked", movement.party_id, other)] = linked

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    def totals(self, kind: MovementKind, party_id: str, since: datetime) -> Totals:
        """Movements of ``kind`` by ``party_id`` since ``since`` (the current one excluded)."""

        def run() -> Totals:
            row = self._conn.execute(
                self._sql.totals, {"party": party_id, "kind": kind.value, "since": since}
            ).one()
            return Totals(int(row[0]), int(row[1]))

        return self._cached(("totals", kind, party_id, since), run)

    def amounts(self, kind: MovementKind, party_id: str, since: datetime) -> tuple[int, ...]:
        """Each movement's amount (purchases, payouts, refunds, disputes: one row each)."""
        a = self._c.activity

        def run() -> tuple[int, ...]:
            rows = self._conn.execute(
                sa.select(a.c.count, a.c.amount_usd_minor).where(
                    a.c.party_id == party_id, a.c.kind == kind.value, a.c.bucket_at >= since
                )
            ).all()
            # Rows at the same instant merge; split them back evenly.
            return tuple(
                amount // count for count, amount in rows for _ in range(int(count)) if count
            )

        return self._cached(("amounts", kind, party_id, since), run)

    def received(self, streamer_id: str, since: datetime) -> Mapping[str, Totals]:
        """Gifts a streamer received since ``since``, by sender."""
        a = self._c.activity

        def run() -> Mapping[str, Totals]:
            rows = self._conn.execute(
                sa.select(a.c.party_id, sa.func.sum(a.c.count), sa.func.sum(a.c.amount_usd_minor))
                .where(
                    a.c.counterparty_id == streamer_id,
                    a.c.kind == MovementKind.GIFT.value,
                    a.c.bucket_at >= since,
                )
                .group_by(a.c.party_id)
            ).all()
            return {r[0]: Totals(int(r[1]), int(r[2])) for r in rows}

        return self._cached(("received", streamer_id, since), run)

    def totals_by_party(
        self, kind: MovementKind, party_ids: Iterable[str], since: datetime | None = None
    ) -> Mapping[str, Totals]:
        """Movements of ``kind`` per party (since ``since``, or ever)."""
        a = self._c.activity
        parties = tuple(sorted(set(party_ids)))

        def run() -> Mapping[str, Totals]:
            found: dict[str, Totals] = {}
            for chunk in _chunks(parties):
                query = (
                    sa.select(
                        a.c.party_id, sa.func.sum(a.c.count), sa.func.sum(a.c.amount_usd_minor)
                    )
                    .where(a.c.party_id.in_(chunk), a.c.kind == kind.value)
                    .group_by(a.c.party_id)
                )
                if since is not None:
                    query = query.where(a.c.bucket_at >= since)
                for r in self._conn.execute(query):
                    found[r[0]] = Totals(int(r[1]), int(r[2]))
            return found

        return self._cached(("by_party", kind, parties, since), run)

    def first_seen(self, party_ids: Iterable[str]) -> Mapping[str, datetime]:
        """When each party's wallet was opened (parties without one are missing)."""
        accounts = self._t.accounts
        parties = tuple(sorted(set(party_ids)))

        def run() -> Mapping[str, datetime]:
            found: dict[str, datetime] = {}
            for chunk in _chunks(parties):
                codes = [f"user:{p}:wallet" for p in chunk]
                for code, created in self._conn.execute(
                    sa.select(accounts.c.code, accounts.c.created_at).where(
                        accounts.c.code.in_(codes)
                    )
                ):
                    found[code.split(":")[1]] = created
            return found

        return self._cached(("first_seen", parties), run)

    def cluster(self, party_id: str) -> str | None:
        """The party's group of declared-linked accounts (None: linked to no one)."""
        c = self._c.clusters
        return self._cached(
            ("cluster", party_id),
            lambda: self._conn.execute(
                sa.select(c.c.cluster_id).where(c.c.party_id == party_id)
            ).scalar(),
        )

    def linked(self, party_a: str, party_b: str) -> bool:
        """True when the host declared the two accounts linked (directly or through others)."""

        def run() -> bool:
            rows = self._conn.execute(self._sql.clusters, {"parties": [party_a, party_b]}).all()
            clusters = {r.party_id: r.cluster_id for r in rows}
            for party in (party_a, party_b):
                self._memo[("cluster", party)] = clusters.get(party)
            return len(rows) == 2 and clusters[party_a] == clusters[party_b]

        return self._cached(("linked", party_a, party_b), run)

    def cluster_members(self, party_id: str) -> frozenset[str]:
        """Every account declared linked to ``party_id`` (itself excluded)."""
        cluster = self.cluster(party_id)
        if cluster is None:
            return frozenset()
        c = self._c.clusters
        return self._cached(
            ("members", cluster),
            lambda: frozenset(
                self._conn.execute(sa.select(c.c.party_id).where(c.c.cluster_id == cluster))
                .scalars()
                .all()
            ),
        ) - {party_id}

    def latest_screening(self, party_id: str) -> str | None:
        """The last screening status of the party: clear, potential_match, match (or None)."""
        s = self._c.screenings
        return self._cached(
            ("screening", party_id),
            lambda: self._conn.execute(
                sa.select(s.c.status)
                .where(s.c.party_id == party_id)
                .order_by(s.c.id.desc())
                .limit(1)
            ).scalar(),
        )

    def open_case_ids(self, party_id: str) -> tuple[int, ...]:
        """Open review cases about the party."""
        c = self._c.cases
        return self._cached(
            ("open_cases", party_id),
            lambda: tuple(
                self._conn.execute(
                    sa.select(c.c.id)
                    .where(c.c.subject_id == party_id, c.c.status == "open")
                    .order_by(c.c.id)
                ).scalars()
            ),
        )

    def entry_ids(self, query: EvidenceQuery) -> tuple[int, ...]:
        """The entries an :class:`EvidenceQuery` names, newest first."""
        e, p, a = self._t.entries, self._t.postings, self._t.accounts
        rows = self._conn.execute(
            sa.select(e.c.id)
            .select_from(p.join(a, a.c.id == p.c.account_id).join(e, e.c.id == p.c.entry_id))
            .where(
                a.c.code.in_(query.accounts),
                e.c.type.in_(query.types),
                e.c.effective_at >= query.since,
            )
            .group_by(e.c.id)
            .order_by(e.c.id.desc())
            .limit(query.limit)
        ).scalars()
        return tuple(rows)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


@dataclass(frozen=True, slots=True)
class Check:
    """What the rules said about one movement (returned to the service that writes it)."""

    movement: Movement
    verdicts: tuple[Verdict, ...]
    open_case_ids: tuple[int, ...] = ()
    """Payouts: cases already open about the streamer (the payout waits on them too)."""

    @property
    def holds(self) -> bool:
        """True when the movement must wait for a review."""
        return bool(self.open_case_ids) or any(v.outcome is Outcome.HOLD for v in self.verdicts)


def refusal(check: Check) -> MonitoringRefused:
    """The error a refusing check raises inside the movement's transaction; the
    service's guard records its case after the rollback (``pending`` holds the check)
    and raises a :class:`MonitoringRefused` with the case id."""
    verdict = next(v for v in check.verdicts if v.outcome is Outcome.REFUSE)
    error = MonitoringRefused(
        f"refused by monitoring rule {verdict.rule}: {verdict.reason}",
        rule=verdict.rule,
        subject_id=verdict.subject_id,
    )
    error.pending = check
    return error


class Monitor:
    """Evaluates the rules for a movement and records activity and cases."""

    def __init__(self, rules: Iterable[MonitoringRule], tables: LedgerTables) -> None:
        self.rules: tuple[MonitoringRule, ...] = tuple(rules)
        for rule in self.rules:
            if not isinstance(rule, MonitoringRule) or not isinstance(rule.kinds, frozenset):
                raise InvalidInput(
                    f"{rule!r} is not a MonitoringRule (name, kinds: a frozenset, evaluate)"
                )
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise InvalidInput(f"monitoring rule names must be unique: {names}")
        self._t = tables
        self._c = tables.compliance
        self._sql = _Statements(tables)
        self._kinds = {
            kind: tuple(r for r in self.rules if kind in r.kinds) for kind in MovementKind
        }
        self._prefetch = {kind: _merge(self._kinds[kind]) for kind in MovementKind}

    def check(self, conn: Connection, movement: Movement) -> Check:
        """Run the rules; raises ``MonitoringRefused`` (with ``pending``) when one refuses."""
        facts = Facts(conn, self._t, movement.at, self._sql)
        facts.prime(movement, self._prefetch[movement.kind])
        verdicts: list[Verdict] = []
        for rule in self._kinds[movement.kind]:
            verdict = rule.evaluate(movement, facts)
            if verdict is None or verdict.outcome is Outcome.ALLOW:
                continue
            if verdict.outcome is Outcome.REFUSE and movement.kind not in REFUSABLE:
                verdict = replace(verdict, outcome=Outcome.HOLD)
            verdicts.append(verdict)
        open_ids = (
            facts.open_case_ids(movement.party_id) if movement.kind is MovementKind.PAYOUT else ()
        )
        check = Check(movement, tuple(verdicts), open_ids)
        if any(v.outcome is Outcome.REFUSE for v in verdicts):
            raise refusal(check)
        return check

    def record(
        self,
        conn: Connection,
        check: Check,
        *,
        entry_ids: Sequence[int] = (),
        holds: Sequence[tuple[str, str, int | None]] = (),
        count_activity: bool = True,
    ) -> tuple[int, ...]:
        """Count the movement and open (or join) a case per verdict; returns the case ids.

        ``holds``: ``(kind, reference, entry_id)`` of what waits for the cases
        (a payout, a purchase's held coins): linked to every case returned.
        """
        movement = check.movement
        if count_activity:
            self._count(conn, movement)
        facts = Facts(conn, self._t, movement.at, self._sql)
        case_ids = [self._open_case(conn, facts, v, movement, entry_ids) for v in check.verdicts]
        linked = list(dict.fromkeys([*case_ids, *check.open_case_ids]))
        if holds and linked:
            h = self._c.case_holds
            conn.execute(
                insert_for(conn, h)
                .values(
                    [
                        {"case_id": case_id, "kind": kind, "reference": ref, "entry_id": entry}
                        for case_id in linked
                        for kind, ref, entry in holds
                    ]
                )
                .on_conflict_do_nothing()
            )
        return tuple(dict.fromkeys(case_ids))

    def _count(self, conn: Connection, movement: Movement) -> None:
        if movement.kind is MovementKind.GIFT:
            bucket = _bucket(movement.at)
            other = movement.counterparty_id or ""
        else:
            # One row per movement: its reference keeps it apart from others at the same time.
            bucket = movement.at
            other = (movement.reference or "")[:64]
        conn.execute(
            self._sql.upsert(conn),
            {
                "kind": movement.kind.value,
                "party": movement.party_id,
                "other": other,
                "bucket": bucket,
                "amount": max(movement.amount_usd_minor, 0),
                "at": movement.at,
            },
        )

    def _open_case(
        self,
        conn: Connection,
        facts: Facts,
        verdict: Verdict,
        movement: Movement,
        entry_ids: Sequence[int],
    ) -> int:
        c = self._c.cases
        open_case = sa.select(c.c.id).where(
            c.c.rule == verdict.rule, c.c.subject_id == verdict.subject_id, c.c.status == "open"
        )
        existing = conn.execute(open_case).scalar()
        if existing is not None:
            return int(existing)
        evidence = list(dict.fromkeys([*entry_ids, *verdict.evidence_entry_ids]))
        if verdict.evidence is not None:
            evidence = list(dict.fromkeys([*evidence, *facts.entry_ids(verdict.evidence)]))
        now = movement.at
        values = {
            "rule": verdict.rule[:64],
            "outcome": verdict.outcome.value,
            "subject_id": verdict.subject_id,
            "subject_role": verdict.subject_role[:16],
            "movement": movement.kind.value,
            "reference": movement.reference[:255] if movement.reference else None,
            "reason": verdict.reason[:1000],
            "evidence": check_json(
                {
                    "entry_ids": evidence,
                    "facts": dict(verdict.facts),
                    "movement": movement.to_dict(),
                },
                name="evidence",
            ),
            "status": "open",
            "created_at": now,
            "updated_at": now,
        }
        inserted = conn.execute(
            insert_for(conn, c)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[c.c.rule, c.c.subject_id], index_where=c.c.status == "open"
            )
            .returning(c.c.id)
        ).scalar()
        if inserted is None:  # a concurrent movement opened it first
            inserted = conn.execute(open_case).scalar_one()
        else:
            _announce(conn, self._t, int(inserted), values, now)
        return int(inserted)


def _announce(
    conn: Connection, tables: LedgerTables, case_id: int, values: Mapping[str, Any], now: datetime
) -> None:
    """A ``case.opened`` outbox event, for the host to notify its reviewers."""
    o = tables.outbox
    conn.execute(
        insert_for(conn, o)
        .values(
            topic="case.opened",
            dedupe_key=f"case.opened:{case_id}",
            entry_id=None,
            payload={
                "case_id": case_id,
                "rule": values["rule"],
                "outcome": values["outcome"],
                "subject_id": values["subject_id"],
                "subject_role": values["subject_role"],
                "movement": values["movement"],
                "reference": values["reference"],
            },
            created_at=now,
        )
        .on_conflict_do_nothing()
    )


def _merge(rules: Sequence[MonitoringRule]) -> Prefetch:
    """The prefetches of a kind's rules as one (duplicates dropped)."""
    totals: list[tuple[MovementKind, timedelta]] = []
    links = False
    for rule in rules:
        wanted = getattr(rule, "prefetch", None)
        if isinstance(wanted, Prefetch):
            totals += wanted.totals
            links = links or wanted.links
    return Prefetch(tuple(dict.fromkeys(totals)), links)


def _bucket(at: datetime) -> datetime:
    seconds = int(at.timestamp())
    return datetime.fromtimestamp(seconds - seconds % GIFT_BUCKET_SECONDS, UTC)
