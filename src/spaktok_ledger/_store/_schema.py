"""The ledger's tables, on the library's own ``MetaData`` with a name prefix.

A host puts them in its own database next to its tables; the prefix (default
``spaktok_``) keeps names apart. The append-only triggers and PostgreSQL's
deferred balance check are DDL, written in the migrations (``0001_core_ledger.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.types import TypeDecorator

from spaktok_ledger._currency import currency_info
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._store._compliance_tables import ComplianceTables, compliance_tables
from spaktok_ledger._store._types import Json

__all__ = ["DEFAULT_PREFIX", "LedgerTables", "UTCDateTime", "check_prefix", "tables_for"]

DEFAULT_PREFIX = "spaktok_"
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

# Integer primary keys: BIGINT identity on PostgreSQL, the rowid alias on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, UTC-aware datetimes out, on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are
    stored as naive UTC (fixed-width text that sorts correctly).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput(f"datetimes must be timezone-aware, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - defensive
            raise TypeError(f"unexpected datetime value {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _exponent_of(currency_column: str, kind: str) -> Callable[[ExecutionContext], int | None]:
    """A column default: the exponent the library writes the row's currency at, right now.

    Computed at insert from the row's own currency, so every write path
    records the units of the amounts it stores (``_store/_units.py``).
    """

    def default(context: ExecutionContext) -> int | None:
        currency = context.get_current_parameters().get(currency_column)  # type: ignore[attr-defined]
        if currency is None:
            return None
        info = currency_info(currency)
        return info.exponent if kind == "iso" else info.stripe_exponent

    return default


def check_prefix(prefix: str) -> str:
    """Table-name prefixes are short lower-case identifiers (``spaktok_``, ``ledger_``...)."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise InvalidInput(
            f"table prefix must match [a-z][a-z0-9_]{{0,30}}, got {prefix!r}", prefix=prefix
        )
    return prefix


# Migration 0013's CHECK on balance rows (the migration keeps its own copy).
_BALANCE_RANGE = (
    "shard_count BETWEEN 1 AND 64 "
    "AND posted BETWEEN -(9223372036854775807 / shard_count) "
    "AND 9223372036854775807 / shard_count "
    "AND pending_debit <= 9223372036854775807 / shard_count "
    "AND pending_credit <= 9223372036854775807 / shard_count"
)


@dataclass(frozen=True, slots=True)
class LedgerTables:
    """The tables of one prefix, on their own ``MetaData``."""

    prefix: str
    metadata: MetaData
    accounts: Table
    balances: Table
    entries: Table
    postings: Table
    quotes: Table
    streamers: Table
    earning_lots: Table
    outbox: Table
    webhook_events: Table
    purchases: Table
    connected_accounts: Table
    payouts: Table
    stripe_txns: Table
    stripe_cursors: Table
    compliance: ComplianceTables
    """Monitoring, cases, links, screening, data keys, audit log (migration 0009)."""
    verify_checkpoint: Table
    """Where the last incremental ``verify`` stopped (migration 0011)."""
    verify_checkpoint_balances: Table
    """Each account's balance as the postings up to that checkpoint make it."""
    worker_jobs: Table
    """The worker's periodic jobs and their leases (migration 0012)."""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"


@cache
def tables_for(prefix: str = DEFAULT_PREFIX) -> LedgerTables:
    """The ledger's tables under ``prefix`` (built once per prefix).

    >>> tables_for("spaktok_").entries.name
    'spaktok_transactions'
    """
    p = check_prefix(prefix)
    md = MetaData()

    accounts = Table(
        f"{p}accounts",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("code", String(200), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("currency", String(3), nullable=False),
        # The exponent this account's postings and balances are written at (0006).
        Column("exponent", SmallInteger, nullable=False, default=_exponent_of("currency", "iso")),
        Column("allow_overdraft", Boolean, nullable=False),
        Column("balance_shards", SmallInteger, nullable=False),
        Column("metadata", Json, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        CheckConstraint(
            "kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')",
            name=f"{p}accounts_kind",
        ),
        CheckConstraint("length(currency) = 3", name=f"{p}accounts_currency"),
        CheckConstraint("balance_shards BETWEEN 1 AND 64", name=f"{p}accounts_shards"),
        Index(f"{p}accounts_code", "code", unique=True),
        # Target of the postings' (account_id, currency) foreign key, so the
        # database itself refuses a posting in another currency than its account.
        UniqueConstraint("id", "currency", name=f"{p}accounts_id_currency"),
    )

    # One row per (account, shard). Amounts are debit-positive sums; an
    # account's balance is the sum over its shards. ``normal_sign`` and
    # ``allow_overdraft`` are copied from the account (immutable) so that a
    # CHECK can guard the no-overdraft rule on every row.
    balances = Table(
        f"{p}balances",
        md,
        Column("account_id", Id, ForeignKey(accounts.c.id), primary_key=True),
        Column("shard", SmallInteger, primary_key=True),
        Column("normal_sign", SmallInteger, nullable=False),
        Column("allow_overdraft", Boolean, nullable=False),
        Column("posted", BigInteger, nullable=False, server_default=text("0")),
        Column("pending_debit", BigInteger, nullable=False, server_default=text("0")),
        Column("pending_credit", BigInteger, nullable=False, server_default=text("0")),
        Column("version", BigInteger, nullable=False, server_default=text("0")),
        # 0013: the account's balance_shards, copied (immutable) for the range CHECK.
        Column("shard_count", SmallInteger, nullable=False, server_default=text("1")),
        CheckConstraint("normal_sign IN (-1, 1)", name=f"{p}balances_sign"),
        CheckConstraint("pending_debit >= 0 AND pending_credit >= 0", name=f"{p}balances_pending"),
        CheckConstraint(
            "allow_overdraft OR (CASE WHEN normal_sign = 1 THEN posted - pending_credit "
            "ELSE -posted - pending_debit END) >= 0",
            name=f"{p}balances_no_overdraft",
        ),
        # 0013: an account's balance stays within signed 64 bits (symmetric: no
        # -2**63), so each of its ``shard_count`` rows within 1/shard_count of it.
        CheckConstraint(_BALANCE_RANGE, name=f"{p}balances_range"),
    )

    # Journal entries: the plan's ``transactions`` table.
    entries = Table(
        f"{p}transactions",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("type", String(64), nullable=False),
        Column("phase", String(8), nullable=False),
        Column("idempotency_key", String(255), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("description", String(1000), nullable=False),
        Column("metadata", Json, nullable=False),
        Column("effective_at", UTCDateTime, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=True),
        Column("hold_id", Id, ForeignKey(f"{p}transactions.id"), nullable=True),
        Column("reverses_id", Id, ForeignKey(f"{p}transactions.id"), nullable=True),
        CheckConstraint(
            "phase IN ('posted', 'pending', 'voided', 'expired')", name=f"{p}transactions_phase"
        ),
        CheckConstraint("expires_at IS NULL OR phase = 'pending'", name=f"{p}transactions_expiry"),
        CheckConstraint(
            "phase NOT IN ('voided', 'expired') OR hold_id IS NOT NULL",
            name=f"{p}transactions_void_names_hold",
        ),
        Index(f"{p}transactions_key", "idempotency_key", unique=True),
        # A hold is resolved (posted, voided or expired) once; an entry is reversed once.
        Index(f"{p}transactions_hold", "hold_id", unique=True),
        Index(f"{p}transactions_reverses", "reverses_id", unique=True),
        Index(f"{p}transactions_type_time", "type", "effective_at"),
        Index(f"{p}transactions_open_holds", "phase", "expires_at"),
    )

    postings = Table(
        f"{p}postings",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("entry_id", Id, ForeignKey(entries.c.id), nullable=False),
        Column("account_id", Id, nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        CheckConstraint("amount <> 0", name=f"{p}postings_nonzero"),
        ForeignKeyConstraint(
            ["account_id", "currency"],
            [accounts.c.id, accounts.c.currency],
            name=f"{p}postings_account_currency",
        ),
        Index(f"{p}postings_account", "account_id", "id"),
        Index(f"{p}postings_entry", "entry_id"),
    )

    # Price quotes shown to viewers (migration 0002): immutable once written;
    # checkout charges exactly the quoted amount.
    quotes = Table(
        f"{p}quotes",
        md,
        Column("id", String(64), primary_key=True),
        Column("pack_id", String(64), nullable=False),
        Column("user_id", String(64), nullable=True),
        Column("currency", String(3), nullable=False),
        Column("local_amount_minor", BigInteger, nullable=False),
        Column(
            "local_exponent", SmallInteger, nullable=False, default=_exponent_of("currency", "iso")
        ),
        Column("usd_price_minor", BigInteger, nullable=False),
        Column("rate", String(40), nullable=False),
        Column("quote", Json, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        CheckConstraint("local_amount_minor > 0", name=f"{p}quotes_amount"),
        CheckConstraint("expires_at > created_at", name=f"{p}quotes_expiry"),
        Index(f"{p}quotes_user", "user_id", "created_at"),
    )

    # The gift economy (migration 0003). Streamers: who may receive gifts, and
    # at what split (NULL: the service default).
    streamers = Table(
        f"{p}streamers",
        md,
        Column("streamer_id", String(64), primary_key=True),
        Column("status", String(8), nullable=False),
        Column("streamer_bps", SmallInteger, nullable=True),
        Column("blocked_reason", String(500), nullable=True),
        Column("metadata", Json, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        CheckConstraint("status IN ('active', 'blocked')", name=f"{p}streamers_status"),
        CheckConstraint(
            "streamer_bps IS NULL OR streamer_bps BETWEEN 0 AND 10000", name=f"{p}streamers_bps"
        ),
    )

    # A gift's streamer share during the hold period: it matures into payable
    # earnings at ``matures_at`` (a work queue, not history: rows are claimed).
    earning_lots = Table(
        f"{p}earning_lots",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("streamer_id", String(64), nullable=False),
        Column("gift_entry_id", Id, ForeignKey(entries.c.id), nullable=False),
        Column("amount_minor", BigInteger, nullable=False),
        Column("matures_at", UTCDateTime, nullable=False),
        Column("matured_at", UTCDateTime, nullable=True),
        Column("maturation_entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        CheckConstraint("amount_minor > 0", name=f"{p}earning_lots_amount"),
        Index(f"{p}earning_lots_due", "matured_at", "matures_at"),
        Index(f"{p}earning_lots_gift", "gift_entry_id", unique=True),
    )

    # Domain events written in the same transaction as their entry.
    outbox = Table(
        f"{p}outbox",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("topic", String(64), nullable=False),
        Column("dedupe_key", String(255), nullable=False),
        Column("entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        Column("payload", Json, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("acked_at", UTCDateTime, nullable=True),
        Index(f"{p}outbox_dedupe", "dedupe_key", unique=True),
        Index(f"{p}outbox_pending", "acked_at", "id"),
        Index(f"{p}outbox_entry", "entry_id"),
    )

    # Stripe webhooks (migration 0004): one row per event id, written in the
    # same transaction as the event's effect (the dedupe), or parked for a retry.
    webhook_events = Table(
        f"{p}webhook_events",
        md,
        Column("event_id", String(255), primary_key=True),
        Column("endpoint", String(16), nullable=False),
        Column("type", String(100), nullable=False),
        Column("account", String(255), nullable=True),
        Column("stripe_created", BigInteger, nullable=False),
        Column("status", String(16), nullable=False),
        Column("outcome", String(64), nullable=False),
        Column("subject_id", String(255), nullable=True),
        Column("payload", Json, nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("1")),
        Column("last_error", String(1000), nullable=True),
        Column("received_at", UTCDateTime, nullable=False),
        Column("processed_at", UTCDateTime, nullable=True),
        # Migration 0012: a delivery claims the event (a lease) before any Stripe
        # call; 'queued' events were acknowledged fast and wait for the worker;
        # parked events carry the key that wakes them and when to try again.
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UTCDateTime, nullable=True),
        Column("wake_key", String(300), nullable=True),
        Column("next_attempt_at", UTCDateTime, nullable=True),
        CheckConstraint(
            "status IN ('processed', 'ignored', 'parked', 'queued')",
            name=f"{p}webhook_events_status",
        ),
        Index(f"{p}webhook_events_parked", "status", "received_at"),
        Index(f"{p}webhook_events_subject", "subject_id"),
        Index(f"{p}webhook_events_wake", "wake_key"),
    )

    # The worker's schedules (migration 0012): one row per periodic job, claimed
    # with a lease so that of several worker processes one runs it when due.
    worker_jobs = Table(
        f"{p}worker_jobs",
        md,
        Column("name", String(64), primary_key=True),
        Column("next_run_at", UTCDateTime, nullable=False),
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UTCDateTime, nullable=True),
        Column("last_run_at", UTCDateTime, nullable=True),
        Column("last_result", String(1000), nullable=True),
        Column("runs", Integer, nullable=False, server_default=text("0")),
        Column("failures", Integer, nullable=False, server_default=text("0")),
    )

    # Coin purchases through Stripe Checkout (migration 0004): the state the
    # webhooks converge on. Amounts: *_usd_minor in US cents; local_amount_minor
    # at local_exponent; stripe_amount, refunded_stripe_amount and the disputes'
    # amounts in Stripe's units for ``currency`` (stripe_exponent; 0006).
    purchases = Table(
        f"{p}purchases",
        md,
        Column("id", String(64), primary_key=True),
        Column("user_id", String(64), nullable=False),
        Column("pack_id", String(64), nullable=False),
        Column("quote_id", String(64), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("coins", BigInteger, nullable=False),
        Column("face_value_usd_minor", BigInteger, nullable=False),
        Column("price_usd_minor", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("local_amount_minor", BigInteger, nullable=False),
        Column(
            "local_exponent", SmallInteger, nullable=False, default=_exponent_of("currency", "iso")
        ),
        Column("stripe_amount", BigInteger, nullable=False),
        Column(
            "stripe_exponent",
            SmallInteger,
            nullable=False,
            default=_exponent_of("currency", "stripe"),
        ),
        Column("status", String(16), nullable=False),
        Column("checkout_session_id", String(255), nullable=True),
        Column("checkout_url", String(2000), nullable=True),
        Column("payment_intent_id", String(255), nullable=True),
        Column("charge_id", String(255), nullable=True),
        Column("credit_entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        Column("held", Boolean, nullable=False, server_default=text("false")),
        Column("refunded_stripe_amount", BigInteger, nullable=False, server_default=text("0")),
        Column("clawed_coins", BigInteger, nullable=False, server_default=text("0")),
        Column("loss_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("clearing_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("settled_net_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("settled_fee_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("settled_clearing_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("disputes", Json, nullable=False),
        # Stripe balance transactions seen so far ({id: [net, fee]}): settlement
        # only ever adds to them, so an older snapshot cannot undo a newer one.
        Column("balance_txns", Json, nullable=False),
        # Bumped by every change: entry and outbox keys are unique per step,
        # because Stripe's running totals can come back to earlier values.
        Column("version", BigInteger, nullable=False, server_default=text("0")),
        Column("refund_due", Boolean, nullable=False, server_default=text("false")),
        Column("checkout_expires_at", UTCDateTime, nullable=True),
        Column("risk_level", String(32), nullable=True),
        Column("risk_score", Integer, nullable=True),
        Column("note", String(1000), nullable=True),
        # Migration 0007. Refunds seen at Stripe ({id: {amount, status}}): a refund's
        # status only moves forward, and a failed one no longer counts.
        Column("refunds", Json, nullable=True),
        # Gift shares clawed back on a chargeback, to give back if it is won.
        Column("gift_clawbacks", Json, nullable=True),
        # Settlement in currencies other than USD ({currency: [net, usd value]}).
        Column("settled_foreign", Json, nullable=True),
        # Booked to platform:unapplied_payments (held, refused, mismatched money).
        Column("unapplied_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        # The first actionable Radar early fraud warning on the charge.
        Column("fraud_warning", String(255), nullable=True),
        # What Stripe charged (Stripe's units; differs from stripe_amount on a mismatch).
        Column("charged_stripe_amount", BigInteger, nullable=True),
        # Returned twice (a chargeback of a refunded payment): booked as a loss.
        Column("over_returned_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        CheckConstraint(
            "status IN ('creating', 'open', 'waiting', 'credited', 'held', 'refused', "
            "'mismatch', 'expired', 'failed', 'error')",
            name=f"{p}purchases_status",
        ),
        CheckConstraint("coins > 0 AND stripe_amount > 0", name=f"{p}purchases_amounts"),
        CheckConstraint(
            "clawed_coins >= 0 AND clawed_coins <= coins", name=f"{p}purchases_clawback"
        ),
        Index(f"{p}purchases_session", "checkout_session_id", unique=True),
        Index(f"{p}purchases_intent", "payment_intent_id"),
        Index(f"{p}purchases_charge", "charge_id"),
        Index(f"{p}purchases_user_time", "user_id", "created_at"),
    )

    # Stripe Connect payouts (migration 0005). A streamer's connected account
    # and its KYC state, as the last ``account.updated`` (or fetch) left it.
    connected_accounts = Table(
        f"{p}connected_accounts",
        md,
        Column("streamer_id", String(64), primary_key=True),
        Column("account_id", String(255), nullable=False),
        Column("payouts_enabled", Boolean, nullable=False),
        Column("charges_enabled", Boolean, nullable=False),
        Column("details_submitted", Boolean, nullable=False),
        Column("currently_due", Json, nullable=False),
        Column("past_due", Json, nullable=False),
        Column("disabled_reason", String(255), nullable=True),
        Column("default_currency", String(3), nullable=True),
        Column("country", String(8), nullable=True),
        Column("stripe_updated", BigInteger, nullable=False, server_default=text("0")),
        Column("service_agreement", String(16), nullable=True),  # migration 0007
        # With a keyring (migration 0009): country, requirements and disabled
        # reason sealed with the streamer's data key; the plain columns then
        # hold nothing personal.
        Column("sealed", Text, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Index(f"{p}connected_accounts_account", "account_id", unique=True),
    )

    # One row per payout request: the Stripe facts (transfer, bank payout) and
    # the ledger state they have been booked to. Amounts: *_usd_minor in US
    # cents; payout_stripe_amount in Stripe's units for payout_currency.
    payouts = Table(
        f"{p}payouts",
        md,
        Column("id", String(64), primary_key=True),
        Column("streamer_id", String(64), nullable=False),
        Column("idempotency_key", String(255), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("account_id", String(255), nullable=False),
        Column("mode", String(16), nullable=False),
        Column("amount_usd_minor", BigInteger, nullable=False),
        Column("status", String(16), nullable=False),
        Column("ledger_state", String(8), nullable=False),
        Column("hold_entry_id", Id, ForeignKey(entries.c.id), nullable=False),
        Column("settlement_entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        Column("returned_usd_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("transfer_id", String(255), nullable=True),
        Column("transfer_reversed_minor", BigInteger, nullable=False, server_default=text("0")),
        Column("stripe_payout_id", String(255), nullable=True),
        Column("stripe_payout_status", String(16), nullable=True),
        Column("payout_currency", String(3), nullable=True),
        Column("payout_stripe_amount", BigInteger, nullable=True),
        # Set with payout_currency (the row is inserted before Stripe names it).
        Column("payout_stripe_exponent", SmallInteger, nullable=True),
        Column("exchange_rate", String(40), nullable=True),
        Column("failure_code", String(100), nullable=True),
        Column("failure_message", String(1000), nullable=True),
        Column("last_error", String(1000), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        # Migration 0007. Transfer attempts: each retry after a refusal needs a new
        # idempotency key (Stripe replays a refusal to the same key).
        Column("transfer_attempts", Integer, nullable=False, server_default=text("0")),
        Column("source_transaction", String(255), nullable=True),
        # What arrived on the connected account (Stripe converts into its currency),
        # in Stripe's units for arrival_currency.
        Column("arrival_currency", String(3), nullable=True),
        Column("arrival_stripe_amount", BigInteger, nullable=True),
        # Manual payouts: bank payout attempts (a failed one is re-paid from the
        # connected account) and what the ledger holds there for this payout.
        Column("bank_attempts", Integer, nullable=False, server_default=text("0")),
        Column("on_account_minor", BigInteger, nullable=False, server_default=text("0")),
        # Migration 0015: the units of the two amounts above (set with
        # arrival_currency): arrival_stripe_amount at Stripe's exponent,
        # on_account_minor at the ledger's (ISO 4217) exponent.
        Column("arrival_stripe_exponent", SmallInteger, nullable=True),
        Column("arrival_exponent", SmallInteger, nullable=True),
        CheckConstraint("mode IN ('automatic', 'manual')", name=f"{p}payouts_mode"),
        CheckConstraint(
            "status IN ('pending', 'transferred', 'in_transit', 'paid', 'failed', "
            "'canceled', 'reversed', 'review', 'refused')",
            name=f"{p}payouts_status",
        ),
        CheckConstraint(
            "ledger_state IN ('held', 'settled', 'voided')", name=f"{p}payouts_ledger_state"
        ),
        CheckConstraint(
            "amount_usd_minor > 0 AND returned_usd_minor >= 0 "
            "AND returned_usd_minor <= amount_usd_minor AND transfer_reversed_minor >= 0",
            name=f"{p}payouts_amounts",
        ),
        Index(f"{p}payouts_key", "streamer_id", "idempotency_key", unique=True),
        Index(f"{p}payouts_streamer_time", "streamer_id", "created_at"),
        Index(f"{p}payouts_open", "status", "updated_at"),
        Index(f"{p}payouts_transfer", "transfer_id"),
        Index(f"{p}payouts_stripe_payout", "stripe_payout_id"),
    )

    # Stripe balance transactions (migration 0007): what the ledger booked (by the
    # subject that booked it) and what reconcile() saw at Stripe, matched by id.
    stripe_txns = Table(
        f"{p}stripe_txns",
        md,
        Column("txn_id", String(255), primary_key=True),
        Column("stripe_account", String(255), nullable=False),
        Column("type", String(64), nullable=False),
        Column("source_id", String(255), nullable=True),
        Column("subject_id", String(64), nullable=True),
        Column("currency", String(3), nullable=False),
        Column("booked_net_minor", BigInteger, nullable=True),
        Column("stripe_net_minor", BigInteger, nullable=True),
        Column("stripe_currency", String(3), nullable=True),
        Column("stripe_created", BigInteger, nullable=False),
        Column("entry_id", Id, ForeignKey(entries.c.id), nullable=True),
        # Migration 0015: the Stripe exponent booked_net_minor (in ``currency``)
        # and stripe_net_minor (in ``stripe_currency``) were written at.
        Column("exponent", SmallInteger, nullable=True),
        Column("stripe_exponent", SmallInteger, nullable=True),
        Column("booked_at", UTCDateTime, nullable=True),
        Column("seen_at", UTCDateTime, nullable=True),
        Index(f"{p}stripe_txns_account_time", "stripe_account", "stripe_created"),
        Index(f"{p}stripe_txns_source", "source_id"),
        Index(f"{p}stripe_txns_subject", "subject_id"),
    )

    # Where reconcile() and the event sweep stopped last time, per stream.
    stripe_cursors = Table(
        f"{p}stripe_cursors",
        md,
        Column("name", String(300), primary_key=True),
        Column("created", BigInteger, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )

    # Incremental verify (migration 0011): one row, and the balances it vouches for.
    verify_checkpoint = Table(
        f"{p}verify_checkpoint",
        md,
        Column("id", SmallInteger, primary_key=True, autoincrement=False),
        Column("entry_id", BigInteger, nullable=False),
        Column("posting_id", BigInteger, nullable=False),
        Column("verified_at", UTCDateTime, nullable=False),
        CheckConstraint("id = 1", name=f"{p}verify_checkpoint_single"),
    )
    verify_checkpoint_balances = Table(
        f"{p}verify_checkpoint_balances",
        md,
        Column("account_id", Id, ForeignKey(accounts.c.id), primary_key=True, autoincrement=False),
        Column("posted", BigInteger, nullable=False),
        Column("pending_debit", BigInteger, nullable=False),
        Column("pending_credit", BigInteger, nullable=False),
    )

    return LedgerTables(
        p,
        md,
        accounts,
        balances,
        entries,
        postings,
        quotes,
        streamers,
        earning_lots,
        outbox,
        webhook_events,
        purchases,
        connected_accounts,
        payouts,
        stripe_txns,
        stripe_cursors,
        compliance_tables(md, p, entries, UTCDateTime),
        verify_checkpoint,
        verify_checkpoint_balances,
        worker_jobs=worker_jobs,
    )
