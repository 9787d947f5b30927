"""The commands that talk to Stripe: ``reconcile``, ``reconcile-payouts``; and the
viewers' debts (``debts``, ``write-off``)."""

from __future__ import annotations

from typing import Any

from spaktok_ledger._cli_base import (
    ENV_CONNECT_SECRET,
    ENV_STRIPE_BASE,
    ENV_STRIPE_KEY,
    ENV_WEBHOOK_SECRET,
    EXIT_FAILED,
    EXIT_OK,
    Context,
    Progress,
    UsageError,
    _pack_catalogue,
    money,
    table,
)
from spaktok_ledger._store import Ledger

__all__ = ["cmd_debts", "cmd_reconcile", "cmd_reconcile_payouts", "cmd_write_off"]


def _gateway(ctx: Context) -> Any:
    """The Stripe gateway from the environment (``STRIPE_API_BASE``: a fake Stripe's URL)."""
    from spaktok_ledger._stripe import StripeGateway

    key = ctx.env(ENV_STRIPE_KEY)
    if not key:
        raise UsageError(f"set {ENV_STRIPE_KEY} (a restricted key is enough) to talk to Stripe")
    base = ctx.env(ENV_STRIPE_BASE)
    if base:
        from spaktok_ledger.testing import stripe_client

        return StripeGateway(stripe_client(base, key))
    return StripeGateway(api_key=key)


def cmd_reconcile_payouts(ctx: Context) -> int:
    from spaktok_ledger._service import GiftEconomy, Payouts

    gateway = _gateway(ctx)
    with ctx.ledger() as ledger:
        ledger.check_schema()
        payouts = Payouts(
            GiftEconomy(ledger),
            gateway,
            # Reconciliation fetches from Stripe and reads no webhooks.
            connect_webhook_secret=ctx.env(ENV_CONNECT_SECRET) or "unused",
            manual_payouts=ctx.args.manual,
        )
        found = payouts.reconcile(limit=ctx.args.limit, settled_within_days=ctx.args.days)
    data = {"discrepancies": [d.to_dict() for d in found]}

    def human() -> None:
        if not found:
            ctx.out.write("every payout agrees with Stripe\n")
            return
        table(
            ctx.out,
            ["payout", "streamer", "problem", "before", "after", "stripe", "resolved"],
            [
                [
                    d.payout_id,
                    d.streamer_id,
                    d.problem,
                    d.status_before,
                    d.status_after,
                    d.stripe_status or "",
                    "yes" if d.resolved else "NO: " + d.detail,
                ]
                for d in found
            ],
        )

    ctx.emit(data, human)
    return EXIT_OK if all(d.resolved for d in found) else EXIT_FAILED


def _money_services(ctx: Context, ledger: Ledger) -> tuple[Any, Any]:
    """Payments and payouts on the ledger, for commands that talk to Stripe (no webhooks:
    they fetch from Stripe, so the endpoints' secrets are not needed)."""
    from spaktok_ledger._service import GiftEconomy, Payments, Payouts, Pricing
    from spaktok_ledger.fx import StaticRateProvider

    gateway = _gateway(ctx)
    economy = GiftEconomy(ledger)
    pricing = Pricing(ledger, _pack_catalogue(ctx), StaticRateProvider({}))
    payouts = Payouts(
        economy,
        gateway,
        connect_webhook_secret=ctx.env(ENV_CONNECT_SECRET) or "unused",
        manual_payouts=ctx.args.manual,
    )
    payments = Payments(
        economy,
        pricing,
        gateway,
        webhook_secret=ctx.env(ENV_WEBHOOK_SECRET) or "unused",
        transfer_events=payouts.handle_event,
    )
    return payments, payouts


def cmd_reconcile(ctx: Context) -> int:
    from spaktok_ledger._service import Reconciliation

    bars: dict[str, Progress] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bars.setdefault(stage, ctx.progress(stage))(done, total)

    with ctx.ledger() as ledger:
        ledger.check_schema()
        payments, payouts = _money_services(ctx, ledger)
        report = Reconciliation(payments, payouts).run(on_progress=progress)

    def human() -> None:
        table(
            ctx.out,
            ["stripe account", "currency", "ledger", "stripe available", "stripe pending"],
            [
                [
                    b.stripe_account,
                    b.currency,
                    money(b.ledger_minor, b.currency),
                    money(b.stripe_available_minor, b.currency),
                    money(b.stripe_pending_minor, b.currency),
                ]
                for b in report.balances
            ],
            right=[2, 3, 4],
        )
        if report.events_applied:
            ctx.out.write(f"\n{len(report.events_applied)} missed event(s) applied\n")
        if report.drift:
            ctx.out.write("\n")
            table(
                ctx.out,
                ["drift", "stripe account", "currency", "transaction", "repaired", "detail"],
                [
                    [
                        d.kind,
                        d.stripe_account,
                        d.currency,
                        d.txn_id or "",
                        "yes" if d.repaired else "NO",
                        d.detail,
                    ]
                    for d in report.drift
                ],
            )
        for error in report.errors:
            ctx.err.write(f"error: {error}\n")
        ctx.out.write(
            f"\n{report.transactions_checked} balance transaction(s) checked: "
            + (
                "the books agree with Stripe\n"
                if report.ok
                else f"{len(report.unresolved)} drift(s) left: see docs/operations.md\n"
            )
        )

    ctx.emit(report.to_dict(), human)
    return EXIT_OK if report.ok else EXIT_FAILED


def _ledger_only_payments(ctx: Context, ledger: Ledger) -> Any:
    from spaktok_ledger._service import GiftEconomy, Payments, Pricing
    from spaktok_ledger.fx import StaticRateProvider

    return Payments(
        GiftEconomy(ledger),
        Pricing(ledger, _pack_catalogue(ctx), StaticRateProvider({})),
        _NoGateway(),
        webhook_secret=ctx.env(ENV_WEBHOOK_SECRET) or "unused",
    )


def cmd_debts(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        payments = _ledger_only_payments(ctx, ledger)
        owed = payments.debts(limit=ctx.args.limit)
    data = {"debts": [{"user_id": u, "debt_usd_minor": a} for u, a in owed]}

    def human() -> None:
        if not owed:
            ctx.out.write("no viewer owes anything\n")
            return
        table(ctx.out, ["user", "owes"], [[u, money(a)] for u, a in owed], right=[1])

    ctx.emit(data, human)
    return EXIT_OK


def cmd_write_off(ctx: Context) -> int:
    with ctx.ledger() as ledger:
        ledger.check_schema()
        payments = _ledger_only_payments(ctx, ledger)
        done = payments.write_off(
            ctx.args.user,
            reason=ctx.args.reason,
            idempotency_key=ctx.args.idempotency_key,
            actor=ctx.args.actor,
        )
    ctx.emit(
        done.to_dict(),
        lambda: ctx.out.write(
            f"wrote off {money(done.amount_usd_minor)} owed by {done.user_id}"
            + (" (already done)" if done.replayed else "")
            + "\n"
        ),
    )
    return EXIT_OK


class _NoGateway:
    """For commands that only read and write the ledger: any Stripe call is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise UsageError(f"this command does not talk to Stripe (it asked for {name})")
