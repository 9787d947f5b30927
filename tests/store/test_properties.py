"""Property tests: DESIGN.md's invariants hold for random valid and invalid commands.

A Hypothesis state machine drives the ledger with random posts, holds, hold
resolutions, reversals, replays and conflicting or invalid requests, against a
plain-Python model of what every balance must be. After every step:

1. every entry balances per currency and all balances sum to zero (``verify``);
2. every balance row equals its postings (``verify``), and the model;
3. no no-overdraft account has available < 0;
4. a replay returns the original entry and changes nothing;
5. a rejected command leaves no trace, and its key stays usable;
6. history only grows (``verify`` also checks the append-only triggers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    AlreadyReversed,
    EntryDraft,
    HoldNotPending,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    Posting,
    UnbalancedEntry,
    UnknownAccount,
)
from spaktok_ledger.testing import FakeClock
from tests.apis import APIS, dispose_engines, open_ledger

ACCOUNTS = [
    AccountSpec("user:1:wallet", AccountKind.LIABILITY),
    AccountSpec("user:2:wallet", AccountKind.LIABILITY, balance_shards=3),
    AccountSpec("platform:stripe_clearing", AccountKind.ASSET),
    AccountSpec("platform:gift_revenue", AccountKind.REVENUE, allow_overdraft=True, balance_shards=4),
    AccountSpec("equity:seed", AccountKind.EQUITY, allow_overdraft=True),
    AccountSpec("platform:eur_clearing", AccountKind.ASSET, "EUR", allow_overdraft=True),
    AccountSpec("platform:eur_revenue", AccountKind.REVENUE, "EUR", allow_overdraft=True),
]
SPECS = {a.code: a for a in ACCOUNTS}
USD = [a.code for a in ACCOUNTS if a.currency == "USD"]
EUR = [a.code for a in ACCOUNTS if a.currency == "EUR"]
_prefix_counter = itertools.count()

amounts = st.integers(min_value=1, max_value=5_000)


@st.composite
def balanced_postings(draw: st.DrawFn) -> tuple[Posting, ...]:
    """2-5 USD postings summing to zero, sometimes with a balanced EUR pair too."""
    n = draw(st.integers(min_value=2, max_value=5))
    codes = draw(st.lists(st.sampled_from(USD), min_size=n, max_size=n))
    values = [draw(amounts) * draw(st.sampled_from([1, -1])) for _ in range(n - 1)]
    last = -sum(values)
    if last == 0:
        # Move the first value away from zero (never onto it): the sum then
        # changes by one, so the balancing posting is non-zero too.
        values[0] += 1 if values[0] > 0 else -1
        last = -sum(values)
    values.append(last)
    postings = [Posting(code, value) for code, value in zip(codes, values, strict=True)]
    if draw(st.booleans()) and draw(st.booleans()):
        eur = draw(amounts)
        postings += [Posting(EUR[0], eur, "EUR"), Posting(EUR[1], -eur, "EUR")]
    return tuple(draw(st.permutations(postings)))


@dataclass
class Model:
    """Debit-positive sums per account, as the store keeps them."""

    posted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPECS, 0))
    pending_debit: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPECS, 0))
    pending_credit: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPECS, 0))

    def available(self, code: str) -> int:
        sign = SPECS[code].kind.normal_sign
        out = self.pending_credit[code] if sign > 0 else self.pending_debit[code]
        return sign * self.posted[code] - out

    def apply(self, postings: tuple[Posting, ...], mode: str) -> None:
        for p in postings:
            if mode in ("post", "resolve_post"):
                self.posted[p.account] += p.amount_minor
            if mode == "hold":
                if p.amount_minor > 0:
                    self.pending_debit[p.account] += p.amount_minor
                else:
                    self.pending_credit[p.account] -= p.amount_minor
            if mode in ("resolve_post", "resolve_void"):
                if p.amount_minor > 0:
                    self.pending_debit[p.account] -= p.amount_minor
                else:
                    self.pending_credit[p.account] += p.amount_minor


class LedgerMachine(RuleBasedStateMachine):
    engine: sa.Engine  # set by the test
    api = "sync"  # or "async": the same machine on AsyncLedger (tests/apis.py)

    posted_entries = Bundle("posted_entries")
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ledger = open_ledger(
            self.api, self.engine, prefix=f"prop{next(_prefix_counter)}_", clock=self.clock
        )
        self.ledger.migrate()
        self.ledger.open_accounts(ACCOUNTS)
        self.model = Model()
        self.keys = itertools.count()
        self.drafts: list[EntryDraft] = []

    # -- helpers ---------------------------------------------------------------

    def snapshot(self) -> tuple:
        t = self.ledger.tables
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(sa.func.count()).select_from(t.entries)).scalar(),
                conn.execute(sa.select(sa.func.count()).select_from(t.postings)).scalar(),
                [tuple(r) for r in conn.execute(sa.select(t.balances).order_by("account_id", "shard"))],
            )

    def key(self) -> str:
        return f"k{next(self.keys)}"

    def expect_refusal(self, postings: tuple[Posting, ...], hold: bool) -> bool:
        trial = Model(
            dict(self.model.posted), dict(self.model.pending_debit), dict(self.model.pending_credit)
        )
        trial.apply(postings, "hold" if hold else "post")
        return any(
            not SPECS[code].allow_overdraft
            and trial.available(code) < self.model.available(code)
            and trial.available(code) < 0
            for code in {p.account for p in postings}
        )

    def submit(self, postings: tuple[Posting, ...], *, hold: bool):
        draft = EntryDraft("hold" if hold else "transfer", postings, self.key())
        refused = self.expect_refusal(postings, hold)
        before = self.snapshot()
        try:
            entry = self.ledger.hold(draft) if hold else self.ledger.post(draft)
        except InsufficientFunds:
            assert refused, "the ledger refused what the model allows"
            assert self.snapshot() == before, "a refused entry left a trace"
            return None
        assert not refused, "the ledger allowed an overdraft"
        assert self.ledger.entry(entry.id) == entry
        self.model.apply(postings, "hold" if hold else "post")
        self.drafts.append(draft)
        return entry

    # -- rules -----------------------------------------------------------------

    @rule(target=posted_entries, amount=st.integers(min_value=1, max_value=20_000))
    def fund(self, amount: int):
        """Seed a wallet or the clearing account from equity (always allowed)."""
        code = ["user:1:wallet", "user:2:wallet", "platform:stripe_clearing"][amount % 3]
        sign = SPECS[code].kind.normal_sign
        entry = self.submit(
            (Posting(code, sign * amount), Posting("equity:seed", -sign * amount)), hold=False
        )
        assert entry is not None
        return entry

    @rule(
        code=st.sampled_from(["user:1:wallet", "user:2:wallet", "platform:stripe_clearing"]),
        extra=st.sampled_from([-1, 0, 1]),
        hold=st.booleans(),
    )
    def spend_to_the_edge(self, code: str, extra: int, hold: bool):
        """Take exactly the available amount (give or take one unit): the overdraft edge."""
        amount = self.model.available(code) + extra
        if amount <= 0:
            return
        sign = SPECS[code].kind.normal_sign
        self.submit(
            (Posting(code, -sign * amount), Posting("equity:seed", sign * amount)), hold=hold
        )

    @rule(target=posted_entries, postings=balanced_postings())
    def post(self, postings):
        entry = self.submit(postings, hold=False)
        return entry if entry is not None else multiple()

    @rule(target=holds, postings=balanced_postings())
    def hold(self, postings):
        entry = self.submit(postings, hold=True)
        return entry if entry is not None else multiple()

    @rule(hold=consumes(holds), post=st.booleans())
    def resolve(self, hold, post: bool):
        entry = self.ledger.post_hold(hold.id) if post else self.ledger.void_hold(hold.id)
        assert entry.hold_id == hold.id
        self.model.apply(hold.postings, "resolve_post" if post else "resolve_void")
        # A hold is resolved once: the other resolution is refused, a replay is not.
        with pytest.raises(HoldNotPending):
            (self.ledger.void_hold if post else self.ledger.post_hold)(hold.id)
        assert (self.ledger.post_hold if post else self.ledger.void_hold)(hold.id) == entry

    @rule(entry=consumes(posted_entries))
    def reverse(self, entry):
        mirror = tuple(Posting(p.account, -p.amount_minor, p.currency) for p in entry.postings)
        refused = self.expect_refusal(mirror, hold=False)
        before = self.snapshot()
        try:
            reversal = self.ledger.reverse(entry.id)
        except InsufficientFunds:
            assert refused
            assert self.snapshot() == before
            return
        assert not refused
        assert reversal.postings == mirror
        self.model.apply(mirror, "post")
        with pytest.raises(AlreadyReversed):
            self.ledger.reverse(entry.id, idempotency_key=self.key())

    @rule(data=st.data())
    def replay(self, data):
        """A replayed draft returns the recorded entry and changes nothing."""
        if not self.drafts:
            return
        draft = data.draw(st.sampled_from(self.drafts))
        before = self.snapshot()
        original = self.ledger.entry_by_key(draft.idempotency_key)
        again = self.ledger.hold(draft) if draft.type == "hold" else self.ledger.post(draft)
        assert again == original
        assert self.snapshot() == before

    @rule(data=st.data(), postings=balanced_postings())
    def conflicting_key(self, data, postings):
        """Another request under a used key is refused and changes nothing."""
        if not self.drafts:
            return
        used = data.draw(st.sampled_from(self.drafts)).idempotency_key
        before = self.snapshot()
        draft = EntryDraft("other", postings, used)
        with pytest.raises(IdempotencyConflict):
            self.ledger.post(draft)
        assert self.snapshot() == before

    @rule(postings=balanced_postings(), delta=st.integers(min_value=1, max_value=99))
    def invalid(self, postings, delta):
        """Unbalanced drafts never reach the store; unknown accounts leave no trace."""
        last = postings[-1].amount_minor + delta
        if last == 0:
            return
        broken = (*postings[:-1], Posting(postings[-1].account, last, postings[-1].currency))
        with pytest.raises(UnbalancedEntry):
            EntryDraft("x", broken, self.key())
        before = self.snapshot()
        ghost = (Posting("user:404:wallet", 5), Posting("equity:seed", -5))
        with pytest.raises(UnknownAccount):
            self.ledger.post(EntryDraft("x", ghost, "ghost"))
        with pytest.raises(InvalidEntry):
            EntryDraft("x", (postings[0],), "single")
        assert self.snapshot() == before

    # -- invariants ------------------------------------------------------------

    @invariant()
    def balances_match_model_and_verify_is_clean(self) -> None:
        balances = self.ledger.balances(SPECS)
        for code, b in balances.items():
            sign = SPECS[code].kind.normal_sign
            assert b.posted_minor == sign * self.model.posted[code], code
            assert b.available_minor == self.model.available(code), code
            if not SPECS[code].allow_overdraft:
                assert b.available_minor >= 0, code
        report = self.ledger.verify()
        assert report.ok, report.problems
        assert self.ledger.trial_balance().balanced


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
def test_ledger_state_machine(engine: sa.Engine, api: str) -> None:
    """Random command sequences keep every DESIGN.md invariant, on SQLite and PostgreSQL,
    through the sync and the async API."""
    LedgerMachine.engine = engine
    LedgerMachine.api = api
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                settings.default,
                stateful_step_count=25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            ),
        )
    finally:
        dispose_engines()
