"""Migration 0009 on a ledger already in use: rows kept, new payout statuses, guards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from spaktok_ledger import Ledger, head_revision, migrate, tables_for


def _before_compliance() -> str:
    """The revision 0009 follows (whatever the integrator chains it after)."""
    from importlib.resources import files

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(files("spaktok_ledger._store") / "migrations"))
    down = ScriptDirectory.from_config(config).get_revision("0009").down_revision
    assert isinstance(down, str)
    return down


def test_upgrade_keeps_payouts_and_accounts(engine, prefix) -> None:
    """A ledger in use before 0009, with a payout and a connected account, upgrades with
    both intact; payouts then accept 'review' and 'refused' (and still refuse nonsense)."""
    migrate(engine, prefix, revision=_before_compliance())
    t = tables_for(prefix)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = Ledger(engine, prefix=prefix)
    from spaktok_ledger import AccountKind, EntryDraft, Posting

    # The accounts as a library of that revision opened them (today's library also
    # writes columns later migrations added, such as balances.shard_count from 0013).
    with engine.begin() as conn:
        for code, kind, sign in (("a:x", AccountKind.ASSET, 1), ("a:y", AccountKind.LIABILITY, -1)):
            account_id = conn.execute(
                t.accounts.insert()
                .values(code=code, kind=kind.value, currency="USD", exponent=2,
                        allow_overdraft=True, balance_shards=1, metadata={}, created_at=now)
                .returning(t.accounts.c.id)
            ).scalar_one()
            conn.execute(
                sa.text(
                    f"INSERT INTO {prefix}balances (account_id, shard, normal_sign, allow_overdraft)"
                    " VALUES (:id, 0, :sign, true)"
                ),
                {"id": account_id, "sign": sign},
            )
    hold = ledger.hold(EntryDraft("payout", (Posting.debit("a:x", 5), Posting.credit("a:y", 5)), "h"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {prefix}connected_accounts (streamer_id, account_id, "
                "payouts_enabled, charges_enabled, details_submitted, currently_due, past_due, "
                "country, created_at, updated_at) VALUES ('bob', 'acct_1', true, true, true, "
                "'[]', '[]', 'DE', :now, :now)"
            ),
            {"now": now if engine.dialect.name == "postgresql" else now.replace(tzinfo=None)},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {prefix}payouts (id, streamer_id, idempotency_key, request_hash, "
                "account_id, mode, amount_usd_minor, status, ledger_state, hold_entry_id, "
                "created_at, updated_at) VALUES ('pyt_1', 'bob', 'k', 'h', 'acct_1', "
                "'automatic', 5, 'pending', 'held', :hold, :now, :now)"
            ),
            {
                "hold": hold.id,
                "now": now if engine.dialect.name == "postgresql" else now.replace(tzinfo=None),
            },
        )
    assert migrate(engine, prefix) == head_revision()
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.payouts)).one()
        assert (row.id, row.amount_usd_minor, row.hold_entry_id) == ("pyt_1", 5, hold.id)
        account = conn.execute(sa.select(t.connected_accounts)).one()
        assert (account.country, account.sealed) == ("DE", None)
        for status in ("review", "refused"):
            conn.execute(t.payouts.update().values(status=status))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(t.payouts.update().values(status="vanished"))
    assert ledger.verify().ok  # the audit log's guards are installed
