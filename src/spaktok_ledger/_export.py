"""Whole-ledger exports for auditors: JSON Lines and a Beancount v3 ledger.

Both exports stream entries in id order (``Ledger.iter_entries``) and, when the
ledger owns its engine, read everything inside one read-only transaction, so
the file is a consistent snapshot even while the application keeps writing:
the entry count, the entries and the balances all come from the same moment.
A ledger bound to a host's connection reads in the host's transaction, whose
isolation level is then the host's choice.

**JSON Lines** (:func:`export_jsonl`) is the lossless one: every entry in every
phase (posted, pending holds, voided, expired), with its postings in signed
minor units. Open the output with ``encoding="utf-8"``.

**Beancount** (:func:`export_beancount`) is for accountants who audit in tools
they trust (``bean-check``, Fava, ``bean-query``). It contains money movements
only: one ``*`` transaction per *posted* entry. A pending hold is not a
movement yet (if it is later posted, the posted entry that resolves it is
exported; voided and expired holds never moved money), so holds are left out
by default; see ``include_pending`` for how they can be shown without
disturbing the balances. The file ends with a ``balance`` assertion per
account holding the store's own posted balance (``Ledger.trial_balance``), so
``bean-check`` itself proves that the balance cache agrees with the history.

Account names: the root comes from the account's kind (asset → ``Assets``,
liability → ``Liabilities``, equity → ``Equity``, revenue → ``Income``,
expense → ``Expenses``) and every part of the code becomes one component
(see :func:`beancount_account_names`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Final, TextIO

from spaktok_ledger._currency import to_major
from spaktok_ledger._domain import Account, AccountKind, Entry, EntryPhase, Posting
from spaktok_ledger._store._engine import READ_ONLY
from spaktok_ledger._store._ledger import Ledger

__all__ = ["beancount_account_names", "export_beancount", "export_jsonl"]

Progress = Callable[[int, int], None]
"""``on_progress(done, total)``: entries read so far and entries in the snapshot."""

BEANCOUNT_ROOTS: Final[Mapping[AccountKind, str]] = {
    AccountKind.ASSET: "Assets",
    AccountKind.LIABILITY: "Liabilities",
    AccountKind.EQUITY: "Equity",
    AccountKind.REVENUE: "Income",
    AccountKind.EXPENSE: "Expenses",
}

# The raw component of the tree that mirrors accounts' open holds (with
# ``include_pending``). No account code has an empty component, so it cannot
# be confused with a real namespace; it is always reserved, so account names
# never depend on the export's options.
_PENDING: Final = ""
_PENDING_NAME: Final = "Pending"

_HEADER: Final = (
    "; spaktok-ledger export: one transaction per posted entry. Pending holds,\n"
    "; voided and expired entries are not money movements and are left out\n"
    "; (a hold that was posted appears as the entry that posted it).\n\n"
)
_HEADER_PENDING: Final = _HEADER.replace(
    "it).\n\n",
    "it).\n; Holds still open are ! transactions on the <Root>:Pending mirror accounts.\n\n",
)
_SPOOL_BYTES: Final = 8 * 2**20
_NOT_IN_COMPONENT = re.compile(r"[^A-Za-z0-9-]")
# Characters a Beancount string cannot show as they are: quotes and
# backslashes, line breaks (a string may span at most 64 lines), other control
# characters (they make `grep` call the file binary) and lone surrogates
# (not encodable as UTF-8).
_UNSAFE_IN_STRING = re.compile(r'[\\"\x00-\x1f\x7f-\x9f\ud800-\udfff]')
_STRING_ESCAPES: Final = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


# -- snapshot and progress -------------------------------------------------------


@contextmanager
def _snapshot(ledger: Ledger) -> Iterator[Ledger]:
    """``ledger`` reading in one read-only transaction when it owns its engine.

    PostgreSQL gets ``REPEATABLE READ`` (a snapshot for the whole transaction);
    SQLite's deferred ``BEGIN`` in WAL mode keeps the snapshot of its first
    read. Writers are never blocked.
    """
    engine = ledger.engine
    if engine is None:
        yield ledger
        return
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(**READ_ONLY)
        with conn.begin():
            yield ledger.using(conn)


def _entries(view: Ledger, on_progress: Progress | None) -> Iterator[Entry]:
    """Every entry in id order, reporting ``(done, total)`` from ``(0, total)`` on."""
    total = view.count_entries()
    if on_progress is not None:
        on_progress(0, total)
    for done, entry in enumerate(view.iter_entries(), start=1):
        yield entry
        if on_progress is not None:
            # Outside a snapshot (a host's connection) entries may arrive
            # during the export; the total grows with them rather than lie.
            on_progress(done, max(total, done))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(value: datetime) -> date:
    return value.astimezone(UTC).date()


# -- JSON Lines ----------------------------------------------------------------


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "type": entry.type,
        "phase": entry.phase.value,
        "idempotency_key": entry.idempotency_key,
        "description": entry.description,
        "metadata": dict(entry.metadata),
        "effective_at": _iso(entry.effective_at),
        "recorded_at": _iso(entry.recorded_at),
        "expires_at": _iso(entry.expires_at) if entry.expires_at is not None else None,
        "hold_id": entry.hold_id,
        "reverses_id": entry.reverses_id,
        "postings": [
            {"account": p.account, "amount_minor": p.amount_minor, "currency": p.currency}
            for p in entry.postings
        ],
    }


def export_jsonl(ledger: Ledger, out: TextIO, *, on_progress: Progress | None = None) -> int:
    """Write every entry as one JSON object per line, in id order; return the count.

    Each object has ``id``, ``type``, ``phase``, ``idempotency_key``,
    ``description``, ``metadata``, ``effective_at``/``recorded_at``/``expires_at``
    (ISO 8601 in UTC, ``Z`` suffix, ``expires_at`` null unless a hold expires),
    ``hold_id``, ``reverses_id`` and ``postings`` (``account``, ``amount_minor``
    signed debit-positive, ``currency``). Entries of every phase are included;
    sum the postings of ``phase == "posted"`` entries for posted balances.
    Non-ASCII text is written as is: open ``out`` with ``encoding="utf-8"``.
    ``on_progress(done, total)`` is called with ``(0, total)`` first, then
    after every entry.

    >>> import io
    >>> buffer = io.StringIO()
    >>> export_jsonl(ledger, buffer)  # doctest: +SKIP
    3
    >>> json.loads(buffer.getvalue().splitlines()[0])["postings"][0]  # doctest: +SKIP
    {'account': 'platform:stripe_clearing', 'amount_minor': 499, 'currency': 'USD'}
    """
    count = 0
    with _snapshot(ledger) as view:
        for entry in _entries(view, on_progress):
            out.write(
                json.dumps(
                    _entry_json(entry), ensure_ascii=False, allow_nan=False, separators=(",", ":")
                )
            )
            out.write("\n")
            count += 1
    return count


# -- Beancount: account names ----------------------------------------------------


def _component(raw: str) -> str:
    """One part of a code as a Beancount component (``[A-Z0-9][A-Za-z0-9-]*``)."""
    if raw == _PENDING:
        return _PENDING_NAME
    text = _NOT_IN_COMPONENT.sub("-", raw)
    if text[0].islower():
        return text[0].upper() + text[1:]
    if text[0].isupper() or text[0].isdigit():
        return text
    return "X" + text


def _unique_components(raws: Iterable[str]) -> dict[str, str]:
    """Components for sibling parts, made unique where the plain mapping collides.

    ``a_b``, ``a-b``, ``a.b`` and ``A_b`` all read ``A-b``: every member of a
    colliding group gets a suffix from the SHA-256 of its own raw text, so no
    part silently takes the plain name and the result depends only on the set
    of siblings, never on the order accounts were opened or listed in.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for raw in raws:
        groups[_component(raw)].append(raw)
    taken = {name for name, group in groups.items() if len(group) == 1}
    result: dict[str, str] = {}
    for name, group in sorted(groups.items()):
        if len(group) == 1:
            result[group[0]] = name
            continue
        for raw in sorted(group):
            digest = hashlib.sha256(raw.encode()).hexdigest()
            # Lengthen the suffix until it is free (8 hex digits nearly always are).
            candidate = next(
                c for size in range(8, 65, 4) if (c := f"{name}-{digest[:size]}") not in taken
            )
            taken.add(candidate)
            result[raw] = candidate
    return result


class _Namer:
    """Beancount names for a set of accounts and for their pending mirrors."""

    def __init__(self, accounts: Iterable[tuple[str, AccountKind]]) -> None:
        self._paths: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        children: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for code, kind in accounts:
            root = BEANCOUNT_ROOTS[AccountKind(kind)]
            parts = tuple(code.split(":"))
            real, mirror = (root, *parts), (root, _PENDING, *parts)
            self._paths[code] = (real, mirror)
            for path in (real, mirror):
                for depth in range(1, len(path)):
                    children[path[:depth]].add(path[depth])
        self._components: dict[tuple[str, ...], str] = {}
        for parent, raws in children.items():
            for raw, component in _unique_components(raws).items():
                self._components[(*parent, raw)] = component

    def _name(self, path: tuple[str, ...]) -> str:
        return ":".join(
            [path[0], *(self._components[path[: depth + 1]] for depth in range(1, len(path)))]
        )

    def name(self, code: str) -> str:
        return self._name(self._paths[code][0])

    def pending_name(self, code: str) -> str:
        return self._name(self._paths[code][1])


def beancount_account_names(
    accounts: Iterable[Account | tuple[str, AccountKind]],
) -> dict[str, str]:
    """Map account codes to valid, distinct Beancount account names.

    The kind gives the root; each part of the code becomes a component: ``_``
    and any character outside ``[A-Za-z0-9-]`` become ``-``, a leading
    lower-case letter is capitalised, and a part starting with anything else
    but a digit gets an ``X`` in front. Parts that would read the same under
    one parent (``abc-1`` and ``abc_1``) all get a short hash suffix instead of
    being merged. The component ``Pending`` directly under a root is reserved
    for the mirror accounts of open holds (``export_beancount(...,
    include_pending=True)``), so a ``pending:...`` namespace is suffixed too.

    >>> names = beancount_account_names(
    ...     [
    ...         ("platform:gift_revenue", AccountKind.REVENUE),
    ...         ("user:42:wallet", AccountKind.LIABILITY),
    ...     ]
    ... )
    >>> names["platform:gift_revenue"], names["user:42:wallet"]
    ('Income:Platform:Gift-revenue', 'Liabilities:User:42:Wallet')
    """
    pairs = [(a.code, a.kind) if isinstance(a, Account) else (a[0], a[1]) for a in accounts]
    namer = _Namer(pairs)
    return {code: namer.name(code) for code, _ in pairs}


# -- Beancount: text ----------------------------------------------------------------


def _quote(text: str) -> str:
    """A Beancount string literal: escapes where Beancount has them, else U+FFFD."""
    return '"' + _UNSAFE_IN_STRING.sub(lambda m: _STRING_ESCAPES.get(m[0], "\ufffd"), text) + '"'


def _amount(amount_minor: int, currency: str) -> str:
    return f"{to_major(amount_minor, currency):f} {currency}"


def _transaction(
    entry: Entry,
    flag: str,
    postings: Iterable[tuple[str, Posting]],
) -> str:
    links = sorted(
        {f"^entry-{i}" for i in (entry.id, entry.hold_id, entry.reverses_id) if i is not None}
    )
    # Entry types match [a-z][a-z0-9_.]*, which is valid tag syntax.
    header = [_day(entry.effective_at).isoformat(), flag, _quote(entry.description)]
    header += [f"#{entry.type}", *links]
    lines = [" ".join(header)]
    meta: list[tuple[str, str]] = [
        ("entry-id", str(entry.id)),
        ("entry-type", _quote(entry.type)),
        ("idempotency-key", _quote(entry.idempotency_key)),
        ("effective-at", _quote(_iso(entry.effective_at))),
        ("recorded-at", _quote(_iso(entry.recorded_at))),
    ]
    if entry.expires_at is not None:
        meta.append(("expires-at", _quote(_iso(entry.expires_at))))
    if entry.hold_id is not None:
        meta.append(("hold-id", str(entry.hold_id)))
    if entry.reverses_id is not None:
        meta.append(("reverses-id", str(entry.reverses_id)))
    if entry.metadata:
        text = json.dumps(dict(entry.metadata), ensure_ascii=False, sort_keys=True)
        meta.append(("entry-metadata", _quote(text)))
    lines += [f"  {key}: {value}" for key, value in meta]
    lines += [f"  {name}  {_amount(p.amount_minor, p.currency)}" for name, p in postings]
    return "\n".join(lines) + "\n\n"


def _inclusive(own: Mapping[str, tuple[str, int]]) -> dict[str, int]:
    """What Beancount's ``balance`` checks: an account plus its sub-accounts, one currency.

    ``own`` maps each name to its currency and own debit-positive balance.
    """
    total = {name: amount for name, (_, amount) in own.items()}
    for name, (currency, amount) in own.items():
        parts = name.split(":")
        for depth in range(2, len(parts)):
            ancestor = ":".join(parts[:depth])
            if ancestor in own and own[ancestor][0] == currency:
                total[ancestor] += amount
    return total


@dataclass(slots=True)
class _Body:
    """What writing the transactions learnt about dates and open holds."""

    count: int = 0
    last_day: date | None = None
    first_use: dict[str, date] = field(default_factory=dict)
    """Account code → date of its first exported posting."""
    pending_first_use: dict[str, date] = field(default_factory=dict)
    """Account code → date of the first open hold touching it."""

    def dated(self, day: date) -> None:
        self.last_day = day if self.last_day is None else max(self.last_day, day)


def _write_transactions(
    view: Ledger,
    namer: _Namer,
    body: IO[str],
    on_progress: Progress | None,
    *,
    include_pending: bool,
) -> _Body:
    seen = _Body()
    open_holds: dict[int, Entry] = {}
    for entry in _entries(view, on_progress):
        if entry.phase is EntryPhase.POSTED and entry.postings:
            day = _day(entry.effective_at)
            for p in entry.postings:
                seen.first_use[p.account] = min(seen.first_use.get(p.account, day), day)
            seen.dated(day)
            named = [(namer.name(p.account), p) for p in entry.postings]
            body.write(_transaction(entry, "*", named))
            seen.count += 1
        if include_pending:
            if entry.phase is EntryPhase.PENDING:
                open_holds[entry.id] = entry
            if entry.hold_id is not None:
                open_holds.pop(entry.hold_id, None)
    for hold in open_holds.values():
        day = _day(hold.effective_at)
        for p in hold.postings:
            seen.pending_first_use[p.account] = min(seen.pending_first_use.get(p.account, day), day)
        seen.dated(day)
        body.write(
            _transaction(hold, "!", [(namer.pending_name(p.account), p) for p in hold.postings])
        )
        seen.count += 1
    return seen


def _own_balances(
    view: Ledger,
    namer: _Namer,
    accounts: list[Account],
    seen: _Body,
    *,
    include_pending: bool,
) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Beancount name → (currency, own debit-positive balance), and the mirrored codes.

    Real accounts hold their posted balance; with pending, a mirror holds its
    account's net pending amount (the normal sign undone).
    """
    own: dict[str, tuple[str, int]] = {}
    for row in view.trial_balance().rows:
        own[namer.name(row.account)] = (row.currency, row.debit_minor - row.credit_minor)
    mirrored = set(seen.pending_first_use)
    if include_pending and accounts:
        for code, balance in view.balances(a.code for a in accounts).items():
            if balance.pending_minor or code in mirrored:
                mirrored.add(code)
                own[namer.pending_name(code)] = (
                    balance.currency,
                    balance.kind.normal_sign * balance.pending_minor,
                )
    return own, mirrored


def _opens(
    namer: _Namer, accounts: list[Account], seen: _Body, mirrored: set[str]
) -> list[tuple[date, str, str]]:
    """(date, name, currency) per account, sorted: no posting may predate its open."""
    opens: list[tuple[date, str, str]] = []
    for account in accounts:
        created = _day(account.created_at)
        first = seen.first_use.get(account.code, created)
        opens.append((min(first, created), namer.name(account.code), account.currency))
        if account.code in mirrored:
            first = seen.pending_first_use.get(account.code, created)
            opens.append((min(first, created), namer.pending_name(account.code), account.currency))
    return sorted(opens)


def export_beancount(
    ledger: Ledger,
    out: TextIO,
    *,
    on_progress: Progress | None = None,
    title: str = "spaktok-ledger",
    include_pending: bool = False,
) -> int:
    """Write the ledger as a Beancount v3 file that ``bean-check`` accepts.

    Contents, in order: the ``title`` and ``operating_currency`` (USD)
    options; an ``open`` per account (with its currency), dated at the earlier
    of its creation and its first exported posting; one ``*`` transaction per
    posted entry, dated at its ``effective_at`` (UTC), tagged with its type,
    linked ``^entry-<id>`` (and to the hold it posts or the entry it reverses),
    with ``entry-id``, ``entry-type``, ``idempotency-key`` and timestamps as
    metadata; and, dated the day after the last dated line, a ``balance``
    assertion per account holding the store's posted balance. Beancount checks
    an account together with its sub-accounts (``user:1`` is the parent of
    ``user:1:wallet``), so those assertions hold the sum of the subtree in the
    account's currency. Amounts are exact decimals at the currency's exponent,
    debit-positive like the ledger. Returns the number of transactions.

    Pending holds are left out by default: they are not money movements, and
    a ``!`` transaction on the real accounts would change their Beancount
    balances away from the posted ones. With ``include_pending=True`` every
    hold still open in the snapshot is written as a ``!`` transaction on a
    mirror tree, ``<Root>:Pending:<account>``, so each real account still
    equals its posted balance and the mirror account holds its pending amount
    (asserted against ``Ledger.balances`` too).

    Open ``out`` with ``encoding="utf-8"``. ``on_progress(done, total)`` is
    called with ``(0, total)`` first, then after every entry read.

    >>> with open("books.beancount", "w", encoding="utf-8") as out:  # doctest: +SKIP
    ...     export_beancount(ledger, out, title="Spaktok 2026")
    42
    >>> # then: bean-check books.beancount
    """
    with (
        _snapshot(ledger) as view,
        tempfile.SpooledTemporaryFile(
            max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
        ) as spool,
    ):
        accounts = view.accounts()
        namer = _Namer((a.code, a.kind) for a in accounts)
        # Transactions go to a spool first: the open dates at the top of the
        # file depend on every entry, and the entries are read only once.
        seen = _write_transactions(view, namer, spool, on_progress, include_pending=include_pending)
        own, mirrored = _own_balances(view, namer, accounts, seen, include_pending=include_pending)
        opens = _opens(namer, accounts, seen, mirrored)

        out.write(_HEADER_PENDING if include_pending else _HEADER)
        out.write(f"option {_quote('title')} {_quote(title)}\n")
        out.write(f"option {_quote('operating_currency')} {_quote('USD')}\n\n")
        for day, name, currency in opens:
            out.write(f"{day.isoformat()} open {name} {currency}\n")
        out.write("\n")
        spool.seek(0)
        shutil.copyfileobj(spool, out)
        if opens:
            # Checked at the start of its day: after every transaction and open.
            last = max(opens[-1][0], seen.last_day or opens[-1][0])
            check_day = (last + timedelta(days=1)).isoformat()
            totals = _inclusive(own)
            for name in sorted(own):
                currency = own[name][0]
                out.write(f"{check_day} balance {name}  {_amount(totals[name], currency)}\n")
    return seen.count
