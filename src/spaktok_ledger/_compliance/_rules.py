"""The shipped monitoring rules and their thresholds (:class:`MonitoringConfig`).

Each rule serves an obligation (docs/compliance.md maps them): velocity,
structuring, rapid in-and-out, concentration, large payouts, chargeback
ratios, gifts between linked accounts, and sanctions screening. What a rule
reads on every gift is one indexed query at most; the heavier rules only
watch payout requests, which are rare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spaktok_ledger._compliance._monitor import (
    EvidenceQuery,
    Facts,
    MonitoringRule,
    Movement,
    MovementKind,
    Outcome,
    Prefetch,
    Totals,
    Verdict,
)
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._split import BPS_TOTAL

__all__ = [
    "ChargebackRatioRule",
    "ConcentrationRule",
    "LinkedAccountsRule",
    "MonitoringConfig",
    "PayoutReviewRule",
    "RapidInOutRule",
    "ScreeningRule",
    "StructuringRule",
    "VelocityRule",
    "default_rules",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _usd(amount_minor: int) -> str:
    return f"USD {amount_minor // 100:,}.{amount_minor % 100:02d}"


def _span(window: timedelta) -> str:
    """A window in words: ``24 hours``, ``7 days``, ``90 minutes``."""
    seconds = int(window.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "day" or seconds > 86_400):
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _bps(part: int, whole: int) -> int:
    """``part / whole`` in basis points, rounded down (0 when ``whole`` is 0)."""
    return part * BPS_TOTAL // whole if whole > 0 else 0


def _wallet(party: str) -> str:
    return f"user:{party}:wallet"


def _earning_accounts(streamer: str) -> tuple[str, ...]:
    return (f"streamer:{streamer}:earnings_pending", f"streamer:{streamer}:earnings")


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """The thresholds of the shipped rules (US cents, basis points, windows).

    ``None`` turns a limit off. The defaults suit a platform where a typical
    viewer spends tens of dollars a week; docs/compliance.md explains how to
    tune them from the false-positive rate of your own traffic.
    """

    # Velocity: movements per window, by count and by value.
    purchase_window: timedelta = timedelta(hours=24)
    max_purchases: int | None = 10
    max_purchase_usd_minor: int | None = 100_000
    gift_window: timedelta = timedelta(hours=1)
    max_gifts: int | None = 3_000
    max_gift_usd_minor: int | None = 100_000
    payout_window: timedelta = timedelta(days=7)
    max_payouts: int | None = 7
    max_payout_usd_minor: int | None = 1_000_000
    # Structuring: several purchases each just under a threshold (a KYC or
    # reporting limit the payer may be avoiding).
    structuring_threshold_usd_minor: int | None = 10_000
    structuring_margin_bps: int = 1_000
    structuring_window: timedelta = timedelta(days=7)
    structuring_min_count: int = 3
    # Rapid in-and-out: coins bought and gifted to one streamer, who asks for a
    # payout within the window.
    rapid_window: timedelta = timedelta(hours=24)
    rapid_min_usd_minor: int = 5_000
    rapid_fresh_share_bps: int = 5_000
    rapid_max_senders: int = 3
    rapid_devotion_bps: int = 8_000
    # Concentration: a streamer's receipts coming mostly from few or new payers.
    concentration_window: timedelta = timedelta(days=30)
    concentration_min_usd_minor: int = 5_000
    # Longer than the default hold period (7 days), so that waiting it out does not
    # make the accounts that paid a streamer look established.
    new_payer_age: timedelta = timedelta(days=14)
    new_payers_share_bps: int = 7_000
    top_payers: int = 2
    top_payers_share_bps: int = 9_000
    top_payers_min_usd_minor: int = 100_000
    # Payouts above this are reviewed before any money moves.
    payout_review_usd_minor: int | None = 200_000
    # Chargebacks: a payer's disputes against their purchases; a streamer's
    # receipts from payers who charged back.
    payer_min_disputes: int = 2
    payer_dispute_ratio_bps: int = 2_000
    streamer_disputed_share_bps: int = 2_000
    streamer_disputed_min_usd_minor: int = 5_000
    # Gifts between accounts the host declared linked (same device, IP, card).
    linked_gift_outcome: Outcome = Outcome.HOLD
    # Payouts to a streamer never screened wait for a screening.
    require_screening_for_payouts: bool = False

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, timedelta) and value <= timedelta(0):
                raise InvalidInput(f"{name} must be a positive duration")
            if name.endswith("_bps") and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000
            ):
                raise InvalidInput(f"{name} must be an int from 0 to 10,000 basis points")
            if (name.startswith(("max_", "structuring_threshold", "payout_review"))) and (
                value is not None
                and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
            ):
                raise InvalidInput(f"{name} must be a positive int or None")
            positive = name == "top_payers" or name.endswith(
                ("_min_usd_minor", "_min_count", "_min_disputes", "_senders")
            )
            if positive and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"{name} must be a positive int")
        if not isinstance(self.linked_gift_outcome, Outcome):
            raise InvalidInput("linked_gift_outcome must be an Outcome")


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """Too many movements of one kind, or too much money, in a window (per party)."""

    name: str
    kind: MovementKind
    window: timedelta
    max_count: int | None
    max_usd_minor: int | None
    outcome: Outcome = Outcome.HOLD
    kinds: frozenset[MovementKind] = field(init=False)
    prefetch: Prefetch = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", frozenset({self.kind}))
        object.__setattr__(self, "prefetch", Prefetch(((self.kind, self.window),)))

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        since = movement.at - self.window
        prior = facts.totals(self.kind, movement.party_id, since)
        count = prior.count + 1
        amount = prior.amount_usd_minor + movement.amount_usd_minor
        over_count = self.max_count is not None and count > self.max_count
        over_amount = self.max_usd_minor is not None and amount > self.max_usd_minor
        if not (over_count or over_amount):
            return None
        payout = self.kind is MovementKind.PAYOUT
        accounts = _earning_accounts(movement.party_id) if payout else (_wallet(movement.party_id),)
        limits = []
        if over_count:
            limits.append(f"{count} {self.kind.value}s (limit {self.max_count})")
        if over_amount:
            limits.append(f"{_usd(amount)} (limit {_usd(self.max_usd_minor or 0)})")
        return Verdict(
            self.outcome,
            self.name,
            movement.party_id,
            f"{' and '.join(limits)} within {_span(self.window)}",
            subject_role="streamer" if payout else "payer",
            evidence=EvidenceQuery(accounts, (self.kind.value,), since),
            facts={
                "count": count,
                "amount_usd_minor": amount,
                "max_count": self.max_count,
                "max_usd_minor": self.max_usd_minor,
                "window_seconds": int(self.window.total_seconds()),
            },
        )


@dataclass(frozen=True, slots=True)
class StructuringRule:
    """Several purchases each just under a threshold within a window."""

    threshold_usd_minor: int
    margin_bps: int
    window: timedelta
    min_count: int
    name: str = "structuring"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.PURCHASE})

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        low = self.threshold_usd_minor - self.threshold_usd_minor * self.margin_bps // BPS_TOTAL

        def near(amount: int) -> bool:
            return low <= amount < self.threshold_usd_minor

        if not near(movement.amount_usd_minor):
            return None
        since = movement.at - self.window
        count = 1 + sum(
            1 for a in facts.amounts(MovementKind.PURCHASE, movement.party_id, since) if near(a)
        )
        if count < self.min_count:
            return None
        return Verdict(
            Outcome.HOLD,
            self.name,
            movement.party_id,
            f"{count} purchases between {_usd(low)} and {_usd(self.threshold_usd_minor)} "
            f"(just under the threshold) within {_span(self.window)}",
            evidence=EvidenceQuery((_wallet(movement.party_id),), ("purchase",), since),
            facts={
                "count": count,
                "threshold_usd_minor": self.threshold_usd_minor,
                "low_usd_minor": low,
            },
        )


@dataclass(frozen=True, slots=True)
class RapidInOutRule:
    """A payout financed by coins bought and gifted to this streamer within hours.

    Fires on a payout request when, in the window before it, the streamer
    received at least ``min_usd_minor`` from at most ``max_senders`` payers
    who bought their coins in the same window and gave (``devotion_bps``) of
    what they gifted in it to this streamer, and those receipts are at least
    ``fresh_share_bps`` of everything the streamer received in the window.
    An ordinary stream has many payers; a cash-out has few.
    """

    window: timedelta
    min_usd_minor: int
    fresh_share_bps: int
    max_senders: int
    devotion_bps: int
    name: str = "rapid_in_out"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.PAYOUT})

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        streamer = movement.party_id
        since = movement.at - self.window
        received = facts.received(streamer, since)
        if not received:
            return None
        bought = facts.totals_by_party(MovementKind.PURCHASE, received, since)
        candidates = [s for s in received if s in bought]
        if not candidates:
            return None
        gifted = facts.totals_by_party(MovementKind.GIFT, candidates, since)
        fresh = {
            s: received[s]
            for s in candidates
            if _bps(received[s].amount_usd_minor, gifted.get(s, Totals()).amount_usd_minor)
            >= self.devotion_bps
        }
        fresh_value = sum(t.amount_usd_minor for t in fresh.values())
        total = sum(t.amount_usd_minor for t in received.values())
        share = _bps(fresh_value, total)
        if (
            fresh_value < self.min_usd_minor
            or len(fresh) > self.max_senders
            or share < self.fresh_share_bps
        ):
            return None
        senders = sorted(fresh)
        return Verdict(
            Outcome.HOLD,
            self.name,
            streamer,
            f"payout requested after {_usd(fresh_value)} of gifts ({share / 100:.0f} % of the "
            f"streamer's receipts) from {len(senders)} payer(s) who bought their coins within "
            f"{_span(self.window)}: {', '.join(senders)}",
            subject_role="streamer",
            evidence=EvidenceQuery(tuple(_wallet(s) for s in senders), ("purchase", "gift"), since),
            facts={
                "fresh_usd_minor": fresh_value,
                "received_usd_minor": total,
                "fresh_share_bps": share,
                "senders": senders,
                "payout_usd_minor": movement.amount_usd_minor,
            },
        )


@dataclass(frozen=True, slots=True)
class ConcentrationRule:
    """A streamer's receipts come mostly from new accounts, or from very few payers."""

    window: timedelta
    min_usd_minor: int
    new_payer_age: timedelta
    new_payers_share_bps: int
    top_payers: int
    top_payers_share_bps: int
    top_payers_min_usd_minor: int
    name: str = "concentration"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.PAYOUT})

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        streamer = movement.party_id
        since = movement.at - self.window
        received = facts.received(streamer, since)
        total = sum(t.amount_usd_minor for t in received.values())
        if total < self.min_usd_minor:
            return None
        seen = facts.first_seen(received)
        young = movement.at - self.new_payer_age
        new = sorted(s for s in received if seen.get(s, movement.at) > young)
        new_share = _bps(sum(received[s].amount_usd_minor for s in new), total)
        ranked = sorted(received, key=lambda s: -received[s].amount_usd_minor)
        top = ranked[: self.top_payers]
        top_share = _bps(sum(received[s].amount_usd_minor for s in top), total)
        figures = {
            "received_usd_minor": total,
            "payers": len(received),
            "new_payers": new,
            "new_payers_share_bps": new_share,
            "top_payers": top,
            "top_payers_share_bps": top_share,
        }
        if new_share >= self.new_payers_share_bps:
            reason = (
                f"{new_share / 100:.0f} % of {_usd(total)} received within "
                f"{_span(self.window)} came from {len(new)} account(s) younger than "
                f"{_span(self.new_payer_age)}"
            )
            payers = new
        elif total >= self.top_payers_min_usd_minor and top_share >= self.top_payers_share_bps:
            reason = (
                f"{top_share / 100:.0f} % of {_usd(total)} received within "
                f"{_span(self.window)} came from {len(top)} payer(s)"
            )
            payers = top
        else:
            return None
        return Verdict(
            Outcome.HOLD,
            self.name,
            streamer,
            reason,
            subject_role="streamer",
            evidence=EvidenceQuery(tuple(_wallet(s) for s in payers[:20]), ("gift",), since),
            facts=figures,
        )


@dataclass(frozen=True, slots=True)
class PayoutReviewRule:
    """Payouts at or above a threshold are reviewed before any money moves."""

    threshold_usd_minor: int
    name: str = "payout_review"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.PAYOUT})

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        if movement.amount_usd_minor < self.threshold_usd_minor:
            return None
        return Verdict(
            Outcome.HOLD,
            self.name,
            movement.party_id,
            f"payout of {_usd(movement.amount_usd_minor)} is at or above the review threshold "
            f"of {_usd(self.threshold_usd_minor)}",
            subject_role="streamer",
            facts={
                "payout_usd_minor": movement.amount_usd_minor,
                "threshold_usd_minor": self.threshold_usd_minor,
            },
        )


@dataclass(frozen=True, slots=True)
class ChargebackRatioRule:
    """Payers whose purchases are often charged back; streamers paid by such payers.

    On a purchase or a dispute: the payer's disputes (at least
    ``payer_min_disputes``) against their purchases, ever, reach
    ``payer_dispute_ratio_bps``. On a payout: payers with any dispute gave at
    least ``streamer_disputed_share_bps`` of the streamer's receipts in the
    window (and at least ``streamer_min_usd_minor``).
    """

    payer_min_disputes: int
    payer_dispute_ratio_bps: int
    window: timedelta
    streamer_disputed_share_bps: int
    streamer_min_usd_minor: int
    name: str = "chargeback_ratio"
    kinds: frozenset[MovementKind] = frozenset(
        {MovementKind.PURCHASE, MovementKind.DISPUTE, MovementKind.PAYOUT}
    )

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        if movement.kind is MovementKind.PAYOUT:
            return self._streamer(movement, facts)
        party = movement.party_id
        disputes = facts.totals_by_party(MovementKind.DISPUTE, [party]).get(party, Totals())
        purchases = facts.totals_by_party(MovementKind.PURCHASE, [party]).get(party, Totals())
        disputed = disputes.count + (movement.kind is MovementKind.DISPUTE)
        bought = purchases.count + (movement.kind is MovementKind.PURCHASE)
        ratio = _bps(disputed, bought)
        if disputed < self.payer_min_disputes or ratio < self.payer_dispute_ratio_bps:
            return None
        return Verdict(
            Outcome.HOLD,
            self.name,
            party,
            f"{disputed} chargeback(s) on {bought} purchase(s) ({ratio / 100:.0f} %)",
            evidence=EvidenceQuery((_wallet(party),), ("dispute", "purchase"), _EPOCH),
            facts={"disputes": disputed, "purchases": bought, "ratio_bps": ratio},
        )

    def _streamer(self, movement: Movement, facts: Facts) -> Verdict | None:
        streamer = movement.party_id
        since = movement.at - self.window
        received = facts.received(streamer, since)
        total = sum(t.amount_usd_minor for t in received.values())
        if total < self.streamer_min_usd_minor:
            return None
        disputed = sorted(facts.totals_by_party(MovementKind.DISPUTE, received))
        share = _bps(sum(received[s].amount_usd_minor for s in disputed), total)
        if not disputed or share < self.streamer_disputed_share_bps:
            return None
        return Verdict(
            Outcome.HOLD,
            self.name,
            streamer,
            f"{share / 100:.0f} % of {_usd(total)} received within {_span(self.window)} came from "
            f"{len(disputed)} payer(s) with chargebacks",
            subject_role="streamer",
            evidence=EvidenceQuery(tuple(_wallet(s) for s in disputed[:20]), ("dispute",), since),
            facts={"disputed_payers": disputed, "share_bps": share, "received_usd_minor": total},
        )


@dataclass(frozen=True, slots=True)
class LinkedAccountsRule:
    """Gifts between accounts the host declared linked (circular gifting).

    On a gift: the sender and the streamer are linked (directly or through
    other accounts). On a payout: the streamer received gifts from linked
    accounts within the window (links declared after the gifts count too).
    """

    window: timedelta
    gift_outcome: Outcome = Outcome.HOLD
    name: str = "linked_accounts"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.GIFT, MovementKind.PAYOUT})
    prefetch: Prefetch = field(default=Prefetch(links=True), init=False)

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        if movement.kind is MovementKind.GIFT:
            streamer = movement.counterparty_id
            if streamer is None or not facts.linked(movement.party_id, streamer):
                return None
            return Verdict(
                self.gift_outcome,
                self.name,
                streamer,
                f"gift of {_usd(movement.amount_usd_minor)} from {movement.party_id}, an "
                f"account declared linked to the streamer",
                subject_role="streamer",
                evidence=EvidenceQuery(
                    (_wallet(movement.party_id),), ("gift",), movement.at - self.window
                ),
                facts={"sender": movement.party_id, "cluster": facts.cluster(streamer)},
            )
        members = facts.cluster_members(movement.party_id)
        if not members:
            return None
        since = movement.at - self.window
        received = facts.received(movement.party_id, since)
        linked = sorted(set(received) & members)
        if not linked:
            return None
        amount = sum(received[s].amount_usd_minor for s in linked)
        return Verdict(
            Outcome.HOLD,
            self.name,
            movement.party_id,
            f"{_usd(amount)} received within {_span(self.window)} from linked account(s): "
            f"{', '.join(linked)}",
            subject_role="streamer",
            evidence=EvidenceQuery(tuple(_wallet(s) for s in linked[:20]), ("gift",), since),
            facts={"linked_senders": linked, "amount_usd_minor": amount},
        )


@dataclass(frozen=True, slots=True)
class ScreeningRule:
    """Payouts to a party on a sanctions list are refused; possible matches wait."""

    require_screening: bool = False
    name: str = "sanctions_screening"
    kinds: frozenset[MovementKind] = frozenset({MovementKind.PAYOUT})

    def evaluate(self, movement: Movement, facts: Facts) -> Verdict | None:
        status = facts.latest_screening(movement.party_id)
        if status == "match":
            outcome, reason = Outcome.REFUSE, "the streamer matches a sanctions list entry"
        elif status == "potential_match":
            outcome, reason = Outcome.HOLD, "the streamer may match a sanctions list entry"
        elif status is None and self.require_screening:
            outcome, reason = Outcome.HOLD, "the streamer has not been screened yet"
        else:
            return None
        return Verdict(
            outcome,
            self.name,
            movement.party_id,
            reason,
            subject_role="streamer",
            facts={"screening": status},
        )


def default_rules(config: MonitoringConfig | None = None) -> tuple[MonitoringRule, ...]:
    """The shipped rules with ``config``'s thresholds (limits set to None are left out)."""
    c = config or MonitoringConfig()
    rules: list[MonitoringRule] = []
    for name, kind, window, count, amount in (
        ("velocity_purchases", MovementKind.PURCHASE, c.purchase_window, c.max_purchases,
         c.max_purchase_usd_minor),
        ("velocity_gifts", MovementKind.GIFT, c.gift_window, c.max_gifts, c.max_gift_usd_minor),
        ("velocity_payouts", MovementKind.PAYOUT, c.payout_window, c.max_payouts,
         c.max_payout_usd_minor),
    ):  # fmt: skip
        if count is not None or amount is not None:
            rules.append(VelocityRule(name, kind, window, count, amount))
    if c.structuring_threshold_usd_minor is not None:
        rules.append(
            StructuringRule(
                c.structuring_threshold_usd_minor,
                c.structuring_margin_bps,
                c.structuring_window,
                c.structuring_min_count,
            )
        )
    rules.append(
        RapidInOutRule(
            c.rapid_window,
            c.rapid_min_usd_minor,
            c.rapid_fresh_share_bps,
            c.rapid_max_senders,
            c.rapid_devotion_bps,
        )
    )
    rules.append(
        ConcentrationRule(
            c.concentration_window,
            c.concentration_min_usd_minor,
            c.new_payer_age,
            c.new_payers_share_bps,
            c.top_payers,
            c.top_payers_share_bps,
            c.top_payers_min_usd_minor,
        )
    )
    if c.payout_review_usd_minor is not None:
        rules.append(PayoutReviewRule(c.payout_review_usd_minor))
    rules.append(
        ChargebackRatioRule(
            c.payer_min_disputes,
            c.payer_dispute_ratio_bps,
            c.concentration_window,
            c.streamer_disputed_share_bps,
            c.streamer_disputed_min_usd_minor,
        )
    )
    rules.append(LinkedAccountsRule(c.concentration_window, c.linked_gift_outcome))
    rules.append(ScreeningRule(c.require_screening_for_payouts))
    return tuple(rules)
