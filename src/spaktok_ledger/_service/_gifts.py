"""The gift economy: wallets, gifts with a revenue split, earnings, history.

:class:`GiftEconomy` is the one wiring point a host builds at start-up (the
ledger, the gift catalogue, the split policy, the hold period, a clock); its
methods are what the host's endpoints call::

    POST /api/gifts/send        -> economy.send_gift(...)
    GET  /api/wallet/balance    -> economy.wallet(user_id)
    GET  /api/transactions      -> economy.history(user_id=...)

Chart of accounts (DESIGN.md), USD minor units:

- ``user:{id}:wallet`` (liability, no overdraft): unspent coins at face value;
- ``user:{id}:receivable`` (asset, no overdraft): what the user owes after a
  refund or chargeback of coins already spent (see the payments service);
- ``streamer:{id}:earnings_pending`` / ``earnings`` / ``payouts_in_flight``
  (liabilities, no overdraft; the first two sharded: hot under gift storms);
- ``platform:*``: clearing, revenue, fees... (overdraft allowed: the
  platform's own books; ``gift_revenue`` is sharded, it takes every gift).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._catalogue import Gift, GiftCatalogue
from spaktok_ledger._clock import Clock
from spaktok_ledger._compliance._audit import AuditAction, write_audit
from spaktok_ledger._compliance._core import (
    Compliance,
    check_sensitive_metadata,
    fingerprint_metadata,
    seal_metadata,
)
from spaktok_ledger._compliance._monitor import Movement, MovementKind
from spaktok_ledger._domain import (
    AccountKind,
    AccountSpec,
    Balance,
    Entry,
    EntryDraft,
    EntryPhase,
    EntryType,
    Posting,
    built_draft,
)
from spaktok_ledger._errors import (
    GiftRejected,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    LedgerError,
    SpendingBlocked,
    UnknownAccount,
    UnknownGift,
    UnknownStreamer,
    UnknownUser,
)
from spaktok_ledger._log import entry_fields, key_given, observed
from spaktok_ledger._money import check_minor
from spaktok_ledger._service._debts import recovery_legs
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._outbox import Outbox
from spaktok_ledger._split import BPS_TOTAL, RevenueSplit
from spaktok_ledger._store import Ledger, tables_for
from spaktok_ledger._store._together import Attached
from spaktok_ledger._validate import check_aware, check_int, check_text, derived_key, shown

__all__ = [
    "PLATFORM_ACCOUNTS",
    "ActivityItem",
    "ActivityPage",
    "EarningsBalance",
    "GiftDetails",
    "GiftEconomy",
    "GiftReceipt",
    "Maturation",
    "Streamer",
    "WalletBalance",
    "WalletCredit",
]

T = TypeVar("T")
MAX_QUANTITY: Final = 10_000
# A gift reads the balances of five accounts: the sender's wallet and receivable
# and the streamer's three earnings buckets (its receipt shows them all).
GIFT_READ_CODES = 5
# Streamer shares wait a week before they can be paid out: why, in docs/gifts.md.
DEFAULT_HOLD_DAYS: Final = 7
REVENUE_SHARDS: Final = 16
EARNINGS_SHARDS: Final = 8

# Platform accounts: (code, kind, shards). All allow overdraft: they are the
# platform's own books, and e.g. FX results or clearing can be either sign.
PLATFORM_ACCOUNTS: Final = (
    ("platform:stripe_clearing", AccountKind.ASSET, 4),
    ("platform:stripe_balance", AccountKind.ASSET, 1),
    ("platform:gift_revenue", AccountKind.REVENUE, REVENUE_SHARDS),
    ("platform:coin_pricing", AccountKind.REVENUE, 4),
    ("platform:payment_fees", AccountKind.EXPENSE, 4),
    ("platform:fx_gain_loss", AccountKind.REVENUE, 4),
    ("platform:refund_losses", AccountKind.EXPENSE, 1),
    ("platform:adjustments", AccountKind.EXPENSE, 1),
    # Contra-asset: the allowance against viewers' debts (see _debts.py).
    ("platform:receivables_allowance", AccountKind.ASSET, 1),
    # Payments received that are not (yet) coins: held for review, refused, mismatched.
    ("platform:unapplied_payments", AccountKind.LIABILITY, 1),
)
GIFT_REVENUE = "platform:gift_revenue"
CLEARING = "platform:stripe_clearing"
COIN_PRICING = "platform:coin_pricing"
ADJUSTMENTS = "platform:adjustments"


def wallet_account(user_id: str) -> str:
    return f"user:{user_id}:wallet"


def receivable_account(user_id: str) -> str:
    return f"user:{user_id}:receivable"


def earnings_account(streamer_id: str, bucket: str = "earnings") -> str:
    return f"streamer:{streamer_id}:{bucket}"


# -- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalletBalance:
    """A viewer's coins: what ``GET /api/wallet/balance`` returns."""

    user_id: str
    coins: int
    """Spendable coins."""
    usd_minor: int
    """Their face value in US cents."""
    pending_coins: int = 0
    """Coins credited but not yet spendable (a purchase held by the fraud policy)."""
    debt_usd_minor: int = 0
    """Owed after a refund/chargeback of spent coins; spending is blocked until repaid."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "coins": self.coins,
            "usd_minor": self.usd_minor,
            "pending_coins": self.pending_coins,
            "debt_usd_minor": self.debt_usd_minor,
        }


@dataclass(frozen=True, slots=True)
class EarningsBalance:
    """A streamer's earnings in US cents."""

    streamer_id: str
    pending_minor: int
    """Gift shares still inside the hold period."""
    available_minor: int
    """Matured earnings not held for a payout: what can be paid out."""
    in_payout_minor: int
    """Requested payouts not yet confirmed by Stripe."""

    @property
    def total_minor(self) -> int:
        return self.pending_minor + self.available_minor + self.in_payout_minor

    def to_dict(self) -> dict[str, Any]:
        return {
            "streamer_id": self.streamer_id,
            "pending_minor": self.pending_minor,
            "available_minor": self.available_minor,
            "in_payout_minor": self.in_payout_minor,
        }


@dataclass(frozen=True, slots=True)
class GiftDetails:
    """What a gift was worth and how it was split (stored on the entry)."""

    gift_id: str
    quantity: int
    coins: int
    value_usd_minor: int
    streamer_share_minor: int
    platform_share_minor: int
    streamer_bps: int
    platform_bps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "gift_id": self.gift_id,
            "quantity": self.quantity,
            "coins": self.coins,
            "value_usd_minor": self.value_usd_minor,
            "streamer_share_minor": self.streamer_share_minor,
            "platform_share_minor": self.platform_share_minor,
            "streamer_bps": self.streamer_bps,
            "platform_bps": self.platform_bps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GiftDetails:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class GiftReceipt:
    """The answer to ``POST /api/gifts/send``."""

    entry_id: int
    sender_id: str
    streamer_id: str
    gift: GiftDetails
    sender_wallet: WalletBalance
    streamer_earnings: EarningsBalance
    sent_at: datetime
    matures_at: datetime | None
    """When the streamer's share becomes payable (None: at once)."""
    replayed: bool = field(default=False, compare=False)
    """True when this answers a retried request: nothing new was written."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "sender_id": self.sender_id,
            "streamer_id": self.streamer_id,
            "gift": self.gift.to_dict(),
            "sender_wallet": self.sender_wallet.to_dict(),
            "streamer_earnings": self.streamer_earnings.to_dict(),
            "sent_at": self.sent_at.isoformat(),
            "matures_at": self.matures_at.isoformat() if self.matures_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, replayed: bool = False) -> GiftReceipt:
        return cls(
            entry_id=data["entry_id"],
            sender_id=data["sender_id"],
            streamer_id=data["streamer_id"],
            gift=GiftDetails.from_dict(data["gift"]),
            sender_wallet=WalletBalance(**data["sender_wallet"]),
            streamer_earnings=EarningsBalance(**data["streamer_earnings"]),
            sent_at=datetime.fromisoformat(data["sent_at"]),
            matures_at=datetime.fromisoformat(data["matures_at"]) if data["matures_at"] else None,
            replayed=replayed,
        )


@dataclass(frozen=True, slots=True)
class WalletCredit:
    """Coins credited to a wallet (a purchase, an adjustment)."""

    entry_id: int
    user_id: str
    coins: int
    """Coins that became spendable (after repaying any debt)."""
    debt_repaid_usd_minor: int
    wallet: WalletBalance
    replayed: bool = field(default=False, compare=False)
    held: bool = False
    """The coins were credited as pending (a hold for review), not spendable yet."""


@dataclass(frozen=True, slots=True)
class Streamer:
    streamer_id: str
    blocked: bool
    streamer_bps: int | None
    """This streamer's share override in basis points (None: the default split)."""
    blocked_reason: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ActivityItem:
    """One movement in a user's or streamer's statement (``GET /api/transactions``)."""

    entry_id: int
    type: str
    occurred_at: datetime
    description: str
    change_minor: int
    """Net change of the holder's money (all their accounts), US cents; + is in."""
    changes: Mapping[str, int]
    """The change per account bucket (``wallet``, ``earnings``, ``payouts_in_flight``...)."""
    counterparty: str | None
    """``streamer:{id}`` or ``user:{id}`` for gifts, ``stripe`` for payments..."""
    gift: GiftDetails | None
    status: str
    """``posted``, or for a hold: ``pending``, ``voided``, ``expired``, ``posted``."""
    metadata: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat(),
            "description": self.description,
            "change_minor": self.change_minor,
            "changes": dict(self.changes),
            "counterparty": self.counterparty,
            "gift": self.gift.to_dict() if self.gift else None,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class ActivityPage:
    items: tuple[ActivityItem, ...]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": [i.to_dict() for i in self.items], "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class Maturation:
    """Shares that left the hold period for one streamer in one run."""

    streamer_id: str
    amount_minor: int
    lots: int
    entry_id: int


@dataclass(frozen=True, slots=True)
class _GiftRequest:
    sender: str
    streamer: str
    gift: Gift
    quantity: int
    ledger_key: str
    request: dict[str, Any]


# -- the service ---------------------------------------------------------------


@functools.cache
def _gift_read(prefix: str) -> sa.Select[Any]:
    """A gift's one read: the balance rows of its receipt's five accounts, each
    with the streamer's row beside it (an outer join: no row, no streamer).
    One statement per table prefix, however many services are built: the
    ledger keeps its compiled form by the statement."""
    t = tables_for(prefix)
    b, streamers = t.balances, t.streamers
    return (
        sa.select(
            b.c.account_id,
            b.c.posted,
            b.c.pending_debit,
            b.c.pending_credit,
            streamers.c.status,
            streamers.c.streamer_bps,
            streamers.c.blocked_reason,
        )
        .select_from(b.outerjoin(streamers, streamers.c.streamer_id == sa.bindparam("streamer")))
        .where(b.c.account_id.in_([sa.bindparam(f"id{i}") for i in range(GIFT_READ_CODES)]))
    )


class GiftEconomy:
    """The gift-economy use cases over one ledger.

    >>> from spaktok_ledger import Gift, GiftCatalogue, Ledger
    >>> economy = GiftEconomy(Ledger("sqlite://"), GiftCatalogue([Gift("rose", 10)]))
    >>> economy.setup()
    >>> economy.register_streamer("bob").blocked
    False
    """

    def __init__(
        self,
        ledger: Ledger,
        gifts: GiftCatalogue | None = None,
        *,
        split: RevenueSplit | None = None,
        hold_days: int = DEFAULT_HOLD_DAYS,
        coin_value_usd_minor: int = 1,
        clock: Clock | None = None,
        earnings_shards: int = EARNINGS_SHARDS,
        revenue_shards: int = REVENUE_SHARDS,
        compliance: Compliance | None = None,
    ) -> None:
        """``earnings_shards`` / ``revenue_shards``: balance rows for each streamer's
        earnings and for ``platform:gift_revenue`` (hot accounts, see docs/gifts.md);
        fixed when the accounts are first opened. ``compliance``: transaction
        monitoring and encryption at rest (docs/compliance.md), for this service and
        the payments and payouts built on it."""
        if not isinstance(ledger, Ledger):
            raise InvalidInput("ledger must be a Ledger")
        if gifts is not None and not isinstance(gifts, GiftCatalogue):
            raise InvalidInput("gifts must be a GiftCatalogue")
        if compliance is not None and (
            not isinstance(compliance, Compliance) or compliance.ledger.prefix != ledger.prefix
        ):
            raise InvalidInput("compliance must be a Compliance built on the same ledger")
        if isinstance(hold_days, bool) or not isinstance(hold_days, int) or hold_days < 0:
            raise InvalidInput("hold_days must be a non-negative int")
        value = check_minor(coin_value_usd_minor, name="coin_value_usd_minor")
        if value < 1:
            raise InvalidInput("coin_value_usd_minor must be at least 1")
        self.ledger = ledger
        self.gifts = gifts
        self.split = split or RevenueSplit()
        self.hold_days = hold_days
        self.coin_value_usd_minor = value
        self.clock: Clock = clock or ledger.now
        self.outbox = Outbox(ledger)
        self.earnings_shards = earnings_shards
        self.revenue_shards = revenue_shards
        self.compliance = compliance
        self._t = ledger.tables
        streamers = self._t.streamers
        self._streamer_query = sa.select(streamers).where(
            streamers.c.streamer_id == sa.bindparam("streamer")
        )
        self._gift_read = _gift_read(self._t.prefix)

    def using(self, tx: Ledger) -> GiftEconomy:
        """This service on another ledger view, typically ``tx`` inside ``ledger.atomic``:
        its calls then join that transaction (the payments and payouts services use
        this to credit coins in the same transaction as a webhook's bookkeeping)."""
        view = copy.copy(self)
        view.ledger = tx
        view.outbox = Outbox(tx)
        return view

    # -- set-up ------------------------------------------------------------------

    def setup(self) -> None:
        """Create or upgrade the schema and open the platform's accounts (idempotent)."""
        self.ledger.migrate()
        self.ledger.open_accounts(
            AccountSpec(
                code,
                kind,
                allow_overdraft=True,
                balance_shards=self.revenue_shards if code == GIFT_REVENUE else shards,
            )
            for code, kind, shards in PLATFORM_ACCOUNTS
        )

    def open_user(self, user_id: str | int) -> str:
        """Open a viewer's wallet (idempotent); returns the normalised id."""
        user = check_party_id(user_id, "user_id")
        self.ledger.open_accounts(self._user_specs(user))
        return user

    @staticmethod
    def _user_specs(user: str) -> list[AccountSpec]:
        return [
            AccountSpec(wallet_account(user), AccountKind.LIABILITY),
            AccountSpec(receivable_account(user), AccountKind.ASSET),
        ]

    def register_streamer(
        self,
        streamer_id: str | int,
        *,
        streamer_bps: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Streamer:
        """Let a streamer receive gifts (idempotent); opens their earnings accounts.

        ``streamer_bps`` overrides the default split for this streamer (for
        example 5000 for partners); ``None`` keeps the default.
        """
        streamer = check_party_id(streamer_id, "streamer_id")
        bps = _check_bps(streamer_bps)
        meta = check_sensitive_metadata(self.compliance, metadata)
        now = self.clock()
        t = self._t.streamers

        def run(tx: Ledger) -> Streamer:
            tx.open_accounts(
                [
                    AccountSpec(
                        earnings_account(streamer, "earnings_pending"),
                        AccountKind.LIABILITY,
                        balance_shards=self.earnings_shards,
                    ),
                    AccountSpec(
                        earnings_account(streamer),
                        AccountKind.LIABILITY,
                        balance_shards=self.earnings_shards,
                    ),
                    AccountSpec(
                        earnings_account(streamer, "payouts_in_flight"), AccountKind.LIABILITY
                    ),
                ]
            )
            conn = tx.connection()
            if self._load_streamer(conn, streamer) is None:
                conn.execute(
                    t.insert(),
                    {
                        "streamer_id": streamer,
                        "status": "active",
                        "streamer_bps": bps,
                        "metadata": seal_metadata(self.compliance, conn, streamer, meta, now=now),
                        "created_at": now,
                        "updated_at": now,
                    },
                )
            found = self._load_streamer(conn, streamer)
            assert found is not None
            return found

        return self.ledger.atomic(run)

    def streamer(self, streamer_id: str | int) -> Streamer:
        """A registered streamer (``UnknownStreamer`` if none)."""
        streamer = check_party_id(streamer_id, "streamer_id")
        found = self.ledger.read(lambda conn: self._load_streamer(conn, streamer))
        if found is None:
            raise UnknownStreamer(f"no streamer {streamer!r}", streamer_id=streamer)
        return found

    def set_split(self, streamer_id: str | int, streamer_bps: int | None) -> Streamer:
        """Change a streamer's share (None: back to the default). Past gifts keep theirs."""
        return self._update_streamer(streamer_id, streamer_bps=_check_bps(streamer_bps))

    def block_streamer(
        self,
        streamer_id: str | int,
        reason: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> Streamer:
        """Stop a streamer from receiving gifts (fraud, terms violations); audited with
        ``actor`` (the operator) and ``request_id`` (the host's request)."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("blocking a streamer needs a reason")
        audit = (AuditAction.BLOCK_STREAMER, actor, reason, request_id)
        return self._update_streamer(
            streamer_id, audit, status="blocked", blocked_reason=reason[:500]
        )

    def unblock_streamer(
        self,
        streamer_id: str | int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> Streamer:
        """Let a blocked streamer receive gifts again (audited)."""
        audit = (AuditAction.UNBLOCK_STREAMER, actor, reason, request_id)
        return self._update_streamer(streamer_id, audit, status="active", blocked_reason=None)

    def _update_streamer(
        self,
        streamer_id: str | int,
        audit: tuple[AuditAction, str | None, str | None, str | None] | None = None,
        **values: Any,
    ) -> Streamer:
        streamer = check_party_id(streamer_id, "streamer_id")
        t = self._t.streamers
        now = self.clock()

        def run(tx: Ledger) -> Streamer:
            conn = tx.connection()
            result = conn.execute(
                t.update().where(t.c.streamer_id == streamer).values(updated_at=now, **values)
            )
            if result.rowcount == 0:
                raise UnknownStreamer(f"no streamer {streamer!r}", streamer_id=streamer)
            if audit is not None:
                action, actor, reason, request_id = audit
                write_audit(
                    conn,
                    self._t,
                    action,
                    actor=actor,
                    subject=f"streamer:{streamer}",
                    reason=reason,
                    request={"streamer_id": streamer, **values},
                    request_id=request_id,
                    now=now,
                )
            found = self._load_streamer(conn, streamer)
            assert found is not None
            return found

        return self.ledger.atomic(run)

    def _load_streamer(self, conn: Connection, streamer: str) -> Streamer | None:
        row = conn.execute(self._streamer_query, {"streamer": streamer}).first()
        if row is None:
            return None
        return Streamer(
            streamer_id=row.streamer_id,
            blocked=row.status == "blocked",
            streamer_bps=row.streamer_bps,
            blocked_reason=row.blocked_reason,
            metadata=row.metadata,
        )

    def split_for(self, streamer: Streamer) -> RevenueSplit:
        """The split a gift to ``streamer`` uses now."""
        return self._split_of(streamer.streamer_bps)

    def _split_of(self, streamer_bps: int | None) -> RevenueSplit:
        if streamer_bps is None:
            return self.split
        return RevenueSplit(streamer_bps, BPS_TOTAL - streamer_bps)

    # -- gifts -------------------------------------------------------------------

    @observed("gifts", "send_gift", describe=entry_fields, given=key_given)
    def send_gift(
        self,
        sender_id: str | int,
        streamer_id: str | int,
        gift_id: str,
        quantity: int = 1,
        *,
        idempotency_key: str,
    ) -> GiftReceipt:
        """Send ``quantity`` of a gift: debit the sender, credit the streamer's share
        and the platform's share in one balanced entry, and return the receipt.

        Idempotent: the same key and request returns the original receipt
        (``replayed=True``); the same key with another request raises
        ``IdempotencyConflict``. Refusals write nothing: ``InsufficientFunds``,
        ``SpendingBlocked`` (the sender owes a refunded purchase),
        ``GiftRejected`` (to yourself, a blocked streamer, a bad quantity),
        ``UnknownGift``, ``UnknownUser``, ``UnknownStreamer``.
        """
        sender = check_party_id(sender_id, "sender_id")
        streamer_key = check_party_id(streamer_id, "streamer_id")
        key = _check_key(idempotency_key)
        request = {
            "op": "send_gift",
            "sender": sender,
            "streamer": streamer_key,
            "gift": gift_id,
            "quantity": quantity,
        }
        ledger_key = derived_key("gift", sender, key)
        try:
            if sender == streamer_key:
                raise GiftRejected("a streamer cannot send a gift to themselves")
            if isinstance(quantity, bool) or not isinstance(quantity, int):
                raise GiftRejected(f"quantity must be an int, not {type(quantity).__name__}")
            if not 1 <= quantity <= MAX_QUANTITY:
                raise GiftRejected(f"quantity must be from 1 to {MAX_QUANTITY}, got {quantity}")
            if self.gifts is None:
                raise UnknownGift(f"no gift {shown(gift_id)}: this service has no gift catalogue")
            gift = self.gifts.get(gift_id)
            send = _GiftRequest(sender, streamer_key, gift, quantity, ledger_key, request)
            return self._guard(lambda: self.ledger.atomic(lambda tx: self._send(tx, send)))
        except LedgerError as exc:
            if isinstance(exc, IdempotencyConflict):
                raise
            replay = self._gift_replay(ledger_key, request)
            if replay is not None:
                return replay
            raise

    def _guard(self, call: Callable[[], T]) -> T:
        """Run ``call``; a monitoring refusal inside it is recorded as a case."""
        if self.compliance is None:
            return call()
        return self.compliance.guard(self.ledger, call)

    def _receiving_split(self, tx: Ledger, streamer_id: str, codes: list[str]) -> RevenueSplit:
        """The split of a gift to ``streamer_id`` (``UnknownStreamer``, or ``GiftRejected``
        for a blocked streamer). One round trip reads the streamer and the balances
        of ``codes``: the post's overdraft check and the receipt use that read (plus
        the unit's own changes)."""
        try:
            _, rows = tx._balances_joined(codes, self._gift_read, {"streamer": streamer_id})
        except UnknownAccount:
            rows = []
        if rows and rows[0].status is not None:
            blocked, reason, bps = (
                rows[0].status == "blocked",
                rows[0].blocked_reason,
                rows[0].streamer_bps,
            )
        else:  # an unknown account or streamer: which one decides the error
            found = self._load_streamer(tx.connection(), streamer_id)
            if found is None:
                raise UnknownStreamer(f"no streamer {streamer_id!r}", streamer_id=streamer_id)
            blocked, reason, bps = found.blocked, found.blocked_reason, found.streamer_bps
        if blocked:
            raise GiftRejected(
                f"streamer {streamer_id} cannot receive gifts: {reason}",
                streamer_id=streamer_id,
            )
        return self._split_of(bps)

    def _send(self, tx: Ledger, req: _GiftRequest) -> GiftReceipt:
        sender, streamer_id, gift, quantity = req.sender, req.streamer, req.gift, req.quantity
        ledger_key, request = req.ledger_key, req.request
        conn = tx.connection()
        codes = [
            wallet_account(sender),
            receivable_account(sender),
            *self._earnings_codes(streamer_id),
        ]
        split = self._receiving_split(tx, streamer_id, codes)
        coins = gift.coins * quantity
        value = coins * self.coin_value_usd_minor
        streamer_share, platform_share = split.split(value)
        now = self.clock()
        matures_at = now + timedelta(days=self.hold_days) if self.hold_days else None
        bucket = "earnings_pending" if self.hold_days else "earnings"
        details = GiftDetails(
            gift.id,
            quantity,
            coins,
            value,
            streamer_share,
            platform_share,
            split.streamer_bps,
            split.platform_bps,
        )
        legs = [Posting.debit(wallet_account(sender), value)]
        if streamer_share:
            legs.append(Posting.credit(earnings_account(streamer_id, bucket), streamer_share))
        if platform_share:
            legs.append(Posting.credit(GIFT_REVENUE, platform_share))
        movement = Movement(MovementKind.GIFT, sender, value, now, streamer_id, ledger_key)
        check = self.compliance.check(tx, movement) if self.compliance else None
        draft = built_draft(  # metadata from checked ids, a catalogue gift, ints, a time
            EntryType.GIFT,
            tuple(legs),
            ledger_key,
            description=f"{quantity} x {gift.name} from {sender} to {streamer_id}",
            metadata={
                "sender": sender,
                "streamer": streamer_id,
                "gift": details.to_dict(),
                "matures_at": matures_at.isoformat() if matures_at else None,
            },
            effective_at=now,
        )
        made: list[GiftReceipt] = []

        def written_with(balances: dict[str, Balance]) -> list[Attached]:
            # The receipt shows the balances after the gift; its event (and the
            # earning lot) are written with the entry and take its id.
            receipt = GiftReceipt(
                entry_id=0,
                sender_id=sender,
                streamer_id=streamer_id,
                gift=details,
                sender_wallet=self._wallet_from(sender, balances),
                streamer_earnings=self._earnings_from(streamer_id, balances),
                sent_at=now,
                matures_at=matures_at,
            )
            made.append(receipt)
            rows: list[Attached] = []
            if matures_at is not None and streamer_share:
                lot = {
                    "streamer_id": streamer_id,
                    "amount_minor": streamer_share,
                    "matures_at": matures_at,
                }
                rows.append(Attached(self._t.earning_lots, lot, entry_id="gift_entry_id"))
            # The receipt is built here from checked values (ids, a catalogue gift,
            # ints, ISO times): its event's payload needs no JSON check.
            rows.append(self.outbox.attached("gift.sent", "gift.sent:", receipt.to_dict(), now=now))
            return rows

        try:
            entry = tx._post_with(draft, request=request, codes=codes, rows=written_with)
        except UnknownAccount as exc:
            raise UnknownUser(f"no wallet for user {sender!r}", user_id=sender) from exc
        except InsufficientFunds as exc:
            if self._debt(tx, sender) > 0:
                raise SpendingBlocked(
                    f"user {sender} owes {self._debt(tx, sender)} US cents from a refunded "
                    "purchase; spending is blocked until it is repaid",
                    user_id=sender,
                ) from exc
            raise
        if entry.replayed:
            return self._receipt_from_outbox(conn, entry)
        if check is not None and self.compliance is not None:
            self.compliance.record(tx, check, entry_ids=(entry.id,))
        return replace(made[-1], entry_id=entry.id)

    def _receipt_from_outbox(self, conn: Connection, entry: Entry) -> GiftReceipt:
        event = self.outbox.find(conn, f"gift.sent:{entry.id}")
        if event is None:  # pragma: no cover - written in the same transaction
            raise LedgerError(f"gift entry {entry.id} has no receipt")
        return GiftReceipt.from_dict(event.payload, replayed=True)

    def _gift_replay(self, ledger_key: str, request: dict[str, Any]) -> GiftReceipt | None:
        """After a refusal: was this a retry of a gift that went through earlier?"""

        def run(conn: Connection) -> GiftReceipt | None:
            e = self._t.entries
            entry_id = conn.execute(
                sa.select(e.c.id).where(e.c.idempotency_key == ledger_key)
            ).scalar()
            if entry_id is None:
                return None
            event = self.outbox.find(conn, f"gift.sent:{entry_id}")
            if event is None:
                return None
            stored = event.payload
            same = (
                stored["sender_id"] == request["sender"]
                and stored["streamer_id"] == request["streamer"]
                and stored["gift"]["gift_id"] == request["gift"]
                and stored["gift"]["quantity"] == request["quantity"]
            )
            if not same:
                raise IdempotencyConflict(
                    "idempotency key was already used for a different gift",
                    idempotency_key=ledger_key,
                )
            return GiftReceipt.from_dict(stored, replayed=True)

        return self.ledger.read(run)

    # -- balances ----------------------------------------------------------------

    def _earnings_codes(self, streamer_id: str) -> list[str]:
        return [
            earnings_account(streamer_id, "earnings_pending"),
            earnings_account(streamer_id),
            earnings_account(streamer_id, "payouts_in_flight"),
        ]

    def _wallet_from(self, user: str, balances: Mapping[str, Balance]) -> WalletBalance:
        wallet = balances[wallet_account(user)]
        debt = balances[receivable_account(user)]
        value = self.coin_value_usd_minor
        return WalletBalance(
            user_id=user,
            coins=wallet.available_minor // value,
            usd_minor=wallet.available_minor,
            pending_coins=wallet.pending_in_minor // value,
            debt_usd_minor=debt.posted_minor,
        )

    @staticmethod
    def _earnings_from(streamer: str, balances: Mapping[str, Balance]) -> EarningsBalance:
        pending = balances[earnings_account(streamer, "earnings_pending")]
        earnings = balances[earnings_account(streamer)]
        in_flight = balances[earnings_account(streamer, "payouts_in_flight")]
        return EarningsBalance(
            streamer_id=streamer,
            pending_minor=pending.posted_minor,
            available_minor=earnings.available_minor,
            in_payout_minor=in_flight.posted_minor + in_flight.pending_in_minor,
        )

    def wallet(self, user_id: str | int) -> WalletBalance:
        """A viewer's spendable coins and their USD face value.

        A user who never bought coins has an empty wallet (no error): wallets
        are opened by the first purchase or by ``open_user``.
        """
        user = check_party_id(user_id, "user_id")
        try:
            balances = self.ledger.balances([wallet_account(user), receivable_account(user)])
        except UnknownAccount:
            return WalletBalance(user_id=user, coins=0, usd_minor=0)
        return self._wallet_from(user, balances)

    def earnings(self, streamer_id: str | int) -> EarningsBalance:
        """A streamer's earnings: pending (hold period), available, in payout."""
        streamer = check_party_id(streamer_id, "streamer_id")
        try:
            balances = self.ledger.balances(self._earnings_codes(streamer))
        except UnknownAccount as exc:
            raise UnknownStreamer(f"no streamer {streamer!r}", streamer_id=streamer) from exc
        return self._earnings_from(streamer, balances)

    def _debt(self, tx: Ledger, user: str) -> int:
        try:
            return tx.balance(receivable_account(user)).posted_minor
        except UnknownAccount:
            return 0

    # -- credits and adjustments --------------------------------------------------

    @observed("gifts", "credit_purchase", describe=entry_fields, given=key_given)
    def credit_purchase(
        self,
        user_id: str | int,
        *,
        coins: int,
        price_usd_minor: int,
        idempotency_key: str,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        request: Mapping[str, Any] | None = None,
        clearing_account: str = CLEARING,
        hold: bool = False,
    ) -> WalletCredit:
        """Credit coins bought for ``price_usd_minor`` (a confirmed payment).

        Books DESIGN.md's purchase: Dr clearing P, Cr wallet F (the coins'
        face value), and P - F to ``platform:coin_pricing`` (a credit when the
        pack is priced above face value, a debit for bonus coins). A debt from
        an earlier refund is repaid first. ``hold=True`` credits the coins as
        pending (a hold the payments service releases or voids).
        """
        user = check_party_id(user_id, "user_id")
        key = _check_key(idempotency_key)
        count = check_minor(coins, name="coins")
        price = check_minor(price_usd_minor, name="price_usd_minor")
        if count <= 0 or price < 0:
            raise InvalidInput("coins must be positive and price_usd_minor not negative")
        face = count * self.coin_value_usd_minor
        meta = check_sensitive_metadata(self.compliance, metadata)
        now = self.clock()

        def run(tx: Ledger) -> WalletCredit:
            # Inside the transaction: a refused credit (a key another user
            # used, a monitoring refusal) must not leave the accounts behind.
            tx.open_accounts(self._user_specs(user))
            check, held = (
                self.compliance.check_credit(
                    tx,
                    user=user,
                    price_usd_minor=price,
                    idempotency_key=key,
                    purchase_id=meta.get("purchase_id"),
                    now=now,
                )
                if self.compliance is not None
                else (None, False)
            )
            held = hold or held
            debt = 0 if held else self._debt(tx, user)
            repaid = min(debt, face)
            legs = [Posting.debit(clearing_account, price)] if price else []
            if face - repaid:
                legs.append(Posting.credit(wallet_account(user), face - repaid))
            if repaid:
                legs.append(Posting.credit(receivable_account(user), repaid))
                legs.extend(recovery_legs(tx, repaid))
            if price != face:
                legs.append(Posting(COIN_PRICING, face - price))
            stored = seal_metadata(self.compliance, tx.connection(), user, meta, now=now)
            draft = EntryDraft(
                EntryType.PURCHASE,
                tuple(legs),
                key,
                description=description or f"{count} coins for user {user}",
                metadata={**stored, "user": user, "coins": count, "price_usd_minor": price},
                effective_at=now,
            )
            fingerprint = request or {
                "op": "credit_purchase",
                "user": user,
                "coins": count,
                "price_usd_minor": price,
                "hold": hold,
                "metadata": fingerprint_metadata(meta),
            }
            entry = (
                tx.hold(draft, request=fingerprint) if held else tx.post(draft, request=fingerprint)
            )
            if check is not None and self.compliance is not None and not entry.replayed:
                reference = meta.get("purchase_id")
                holds = (
                    [("purchase", reference, entry.id)]
                    if isinstance(reference, str)
                    else [("credit", str(entry.id), entry.id)]
                )
                self.compliance.record(
                    tx, check, entry_ids=(entry.id,), holds=holds if check.holds else ()
                )
            return self._credit_result(tx, user, entry, now)

        return self._guard(lambda: self.ledger.atomic(run))

    def _credit_result(self, tx: Ledger, user: str, entry: Entry, now: datetime) -> WalletCredit:
        wallet_leg = sum(
            -p.amount_minor for p in entry.postings if p.account == wallet_account(user)
        )
        repaid = sum(
            -p.amount_minor for p in entry.postings if p.account == receivable_account(user)
        )
        balances = tx.balances([wallet_account(user), receivable_account(user)])
        credit = WalletCredit(
            entry_id=entry.id,
            user_id=user,
            coins=wallet_leg // self.coin_value_usd_minor,
            debt_repaid_usd_minor=repaid,
            wallet=self._wallet_from(user, balances),
            replayed=entry.replayed,
            held=entry.phase is EntryPhase.PENDING,
        )
        if not entry.replayed:
            self.outbox.write(
                tx.connection(),
                "wallet.credited",
                f"wallet.credited:{entry.id}",
                {
                    "entry_id": entry.id,
                    "user_id": user,
                    "coins": credit.coins,
                    "debt_repaid_usd_minor": repaid,
                    "pending": entry.phase is EntryPhase.PENDING,
                    "type": entry.type,
                },
                entry_id=entry.id,
                now=now,
            )
        return credit

    def adjust(
        self,
        user_id: str | int,
        coins: int,
        *,
        reason: str,
        idempotency_key: str,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> WalletCredit:
        """An admin adjustment: credit (positive) or debit (negative) coins, with a reason.

        Booked against ``platform:adjustments``; the reason and the actor are
        kept on the entry, and the action in the audit log (with the host's
        ``request_id``). A debit cannot take the wallet below zero.
        """
        user = check_party_id(user_id, "user_id")
        count = check_minor(coins, name="coins", allow_zero=False)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("an adjustment needs a reason")
        key = _check_key(idempotency_key)
        amount = count * self.coin_value_usd_minor
        now = self.clock()

        def run(tx: Ledger) -> WalletCredit:
            draft = EntryDraft(
                EntryType.ADJUSTMENT,
                (Posting(ADJUSTMENTS, amount), Posting(wallet_account(user), -amount)),
                f"adjust:{key}",
                description=f"adjustment: {reason.strip()[:900]}",
                metadata={"user": user, "coins": count, "reason": reason, "actor": actor},
                effective_at=now,
            )
            request = {"op": "adjust", "user": user, "coins": count, "reason": reason}
            try:
                entry = tx.post(draft, request=request)
            except UnknownAccount as exc:
                raise UnknownUser(f"no wallet for user {user!r}", user_id=user) from exc
            if count > 0 and not entry.replayed:
                self.using(tx).repay_debt(user, derived_key("adjust", key, limit=MAX_KEY))
            if not entry.replayed:
                write_audit(
                    tx.connection(),
                    self._t,
                    AuditAction.ADJUST,
                    actor=actor,
                    subject=f"user:{user}",
                    reason=reason,
                    request={"user_id": user, "coins": count, "idempotency_key": key},
                    request_id=request_id,
                    result={"entry_id": entry.id},
                    now=now,
                )
            return self._credit_result(tx, user, entry, now)

        return self.ledger.atomic(run)

    def repay_debt(self, user_id: str | int, idempotency_key: str) -> int:
        """Repay what the user owes (a refunded purchase's spent coins) from their
        spendable coins; returns the US cents repaid (0: no debt or no coins).

        Credits through ``credit_purchase`` repay first by themselves; this is
        for coins that became spendable another way (a released hold, an
        admin adjustment), so that a debt always blocks spending.
        """
        user = check_party_id(user_id, "user_id")
        key = _check_key(idempotency_key)
        now = self.clock()

        def run(tx: Ledger) -> int:
            debt = self._debt(tx, user)
            if debt <= 0:
                return 0
            available = tx.balance(wallet_account(user)).available_minor
            amount = min(debt, available)
            if amount <= 0:
                return 0
            tx.post(
                EntryDraft(
                    EntryType.REPAYMENT,
                    (
                        Posting.debit(wallet_account(user), amount),
                        Posting.credit(receivable_account(user), amount),
                        *recovery_legs(tx, amount),
                    ),
                    f"repay:{key}",
                    description=f"debt repaid from {user}'s coins",
                    metadata={"user": user, "counterparty": "platform"},
                    effective_at=now,
                ),
                request={"op": "repay_debt", "user": user, "amount": amount},
            )
            return amount

        return self.ledger.atomic(run)

    # -- the hold period -----------------------------------------------------------

    def mature_earnings(self, *, now: datetime | None = None, limit: int = 500) -> list[Maturation]:
        """Move gift shares whose hold period has ended from pending to payable earnings.

        One entry per streamer per run; each share matures exactly once, even
        when several runs overlap (shares are claimed in the same transaction
        as the entry). Run it periodically (``spaktok-ledger mature-earnings``).
        """
        moment = check_aware(now, "now") if now is not None else self.clock()
        check_int(limit, "limit", minimum=1, maximum=100_000)
        lots = self._t.earning_lots
        due = (
            sa.select(lots.c.streamer_id)
            .where(lots.c.matured_at.is_(None), lots.c.matures_at <= moment)
            .group_by(lots.c.streamer_id)
            .order_by(lots.c.streamer_id)
            .limit(limit)
        )
        streamers = self.ledger.read(lambda conn: list(conn.execute(due).scalars()))
        done = []
        for streamer in streamers:
            result = self.ledger.atomic(partial(self._mature, streamer=streamer, moment=moment))
            if result is not None:
                done.append(result)
        return done

    def _mature(self, tx: Ledger, streamer: str, moment: datetime) -> Maturation | None:
        conn = tx.connection()
        lots = self._t.earning_lots
        claimed = conn.execute(
            lots.update()
            .where(
                lots.c.streamer_id == streamer,
                lots.c.matured_at.is_(None),
                lots.c.matures_at <= moment,
            )
            .values(matured_at=moment)
            .returning(lots.c.id, lots.c.amount_minor)
        ).all()
        if not claimed:
            return None
        ids = sorted(row.id for row in claimed)
        total = sum(row.amount_minor for row in claimed)
        entry = tx.post(
            EntryDraft(
                EntryType.MATURATION,
                (
                    Posting.debit(earnings_account(streamer, "earnings_pending"), total),
                    Posting.credit(earnings_account(streamer), total),
                ),
                f"mature:{streamer}:{ids[0]}-{ids[-1]}:{len(ids)}",
                description=f"{len(ids)} gift share(s) matured for {streamer}",
                metadata={"streamer": streamer, "lots": len(ids)},
                effective_at=moment,
            )
        )
        conn.execute(lots.update().where(lots.c.id.in_(ids)).values(maturation_entry_id=entry.id))
        self.outbox.write(
            conn,
            "earnings.matured",
            f"earnings.matured:{entry.id}",
            {"streamer_id": streamer, "amount_minor": total, "entry_id": entry.id},
            entry_id=entry.id,
            now=moment,
        )
        return Maturation(streamer, total, len(ids), entry.id)

    # -- history -------------------------------------------------------------------

    def history(
        self,
        *,
        user_id: str | int | None = None,
        streamer_id: str | int | None = None,
        limit: int = 50,
        cursor: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> ActivityPage:
        """A user's or a streamer's statement, newest first (``GET /api/transactions``).

        Exactly one of ``user_id`` / ``streamer_id`` (a user who never bought coins
        has an empty statement; an unregistered streamer is ``UnknownStreamer``).
        Pages with ``cursor``;
        filters by entry ``types`` (``gift``, ``purchase``, ``payout``...) and
        by time (``since <= t < until``). Each item carries its counterparty,
        the amounts and, for gifts, the split.
        """
        if (user_id is None) == (streamer_id is None):
            raise InvalidInput("history needs exactly one of user_id or streamer_id")
        if user_id is not None:
            holder = check_party_id(user_id, "user_id")
            codes = {wallet_account(holder): "wallet", receivable_account(holder): "debt"}
            missing: LedgerError = UnknownUser(f"no wallet for user {holder!r}", user_id=holder)
        else:
            holder = check_party_id(streamer_id, "streamer_id")
            codes = {code: code.rsplit(":", 1)[1] for code in self._earnings_codes(holder)}
            missing = UnknownStreamer(f"no streamer {holder!r}", streamer_id=holder)
        try:
            page = self.ledger.entries_page(
                list(codes), limit=limit, cursor=cursor, types=types, since=since, until=until
            )
        except UnknownAccount as exc:
            if user_id is not None and cursor is None:
                return ActivityPage((), None)  # a user without a wallet has no history yet
            raise missing from exc
        items = []
        for entry in page.entries:
            changes: dict[str, int] = {}
            for p in entry.postings:
                if p.account in codes:
                    bucket = codes[p.account]
                    # liabilities are credit-normal; the debt (receivable) counts against
                    # the user, so both read "+ = the holder has more".
                    changes[bucket] = changes.get(bucket, 0) - p.amount_minor
            status = (
                page.hold_status.get(entry.id, EntryPhase.PENDING).value
                if entry.phase is EntryPhase.PENDING
                else entry.phase.value
            )
            meta = entry.metadata
            gift = GiftDetails.from_dict(meta["gift"]) if "gift" in meta else None
            items.append(
                ActivityItem(
                    entry_id=entry.id,
                    type=entry.type,
                    occurred_at=entry.effective_at,
                    description=entry.description,
                    change_minor=sum(changes.values()),
                    changes=changes,
                    counterparty=_counterparty(entry, user_id is not None),
                    gift=gift,
                    status=status,
                    metadata=meta,
                )
            )
        return ActivityPage(tuple(items), page.next_cursor)


def _counterparty(entry: Entry, for_user: bool) -> str | None:
    meta = entry.metadata
    if entry.type == EntryType.GIFT:
        return f"streamer:{meta['streamer']}" if for_user else f"user:{meta['sender']}"
    if entry.type in (EntryType.PURCHASE, EntryType.REFUND, EntryType.DISPUTE, EntryType.PAYOUT):
        return "stripe"
    if entry.type in (EntryType.ADJUSTMENT, EntryType.MATURATION):
        return "platform"
    counterparty = meta.get("counterparty")
    return counterparty if isinstance(counterparty, str) else None


def _check_bps(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS_TOTAL:
        raise InvalidInput(f"streamer_bps must be an int from 0 to {BPS_TOTAL}, got {shown(value)}")
    return value


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise InvalidInput(
            "idempotency_key must be a non-empty string of at most 200 characters",
            field="idempotency_key",
        )
    return check_text(key, "idempotency_key", max_length=MAX_KEY)


MAX_KEY = 200
"""Characters of a client's idempotency key (derived keys are hashed to fit)."""
