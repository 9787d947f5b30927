"""The pure core: money validation, accounts, postings, entries, balances."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger import (
    AccountKind,
    AccountSpec,
    Balance,
    EntryDraft,
    InvalidAccountCode,
    InvalidAmount,
    InvalidAmountType,
    InvalidEntry,
    InvalidInput,
    Posting,
    UnbalancedEntry,
    UnknownCurrency,
)
from spaktok_ledger._money import INT64_MAX, INT64_MIN, check_minor


def _draft(*postings: Posting, key: str = "k1", **kw) -> EntryDraft:
    return EntryDraft(type="transfer", postings=postings, idempotency_key=key, **kw)


class TestCheckMinor:
    @given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
    def test_accepts_every_int64(self, value: int) -> None:
        """Any int in signed 64-bit range is a valid minor amount."""
        assert check_minor(value) == value

    @pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 2**100])
    def test_rejects_out_of_range(self, value: int) -> None:
        """Amounts outside int64 are refused: they cannot be stored."""
        with pytest.raises(InvalidAmount, match="64-bit"):
            check_minor(value)

    @pytest.mark.parametrize("value", [1.0, 0.1, float("nan"), True, False, "100", None])
    def test_rejects_non_int_types(self, value: object) -> None:
        """Floats, bools, strings and None are type errors, and also ValueErrors."""
        with pytest.raises(InvalidAmountType) as info:
            check_minor(value)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1.5", "0.01"])
    def test_rejects_non_integral_or_non_finite_decimals(self, value: str) -> None:
        """A Decimal must be finite and whole to count as minor units."""
        with pytest.raises(InvalidAmount):
            check_minor(Decimal(value))

    def test_accepts_integral_decimal(self) -> None:
        """Decimal('500'), and Decimal('5E2'), are 500 minor units."""
        assert check_minor(Decimal("500")) == 500
        assert check_minor(Decimal("5E2")) == 500

    def test_zero_can_be_refused(self) -> None:
        """allow_zero=False refuses 0 (postings are never zero)."""
        with pytest.raises(InvalidAmount, match="zero"):
            check_minor(0, allow_zero=False)


class TestAccounts:
    @pytest.mark.parametrize(
        "code", ["user:42:wallet", "platform:gift_revenue", "streamer:abc-1:earnings_pending"]
    )
    def test_valid_codes(self, code: str) -> None:
        """Namespaced codes from the chart of accounts are accepted."""
        assert AccountSpec(code, AccountKind.LIABILITY).code == code

    @pytest.mark.parametrize(
        "code", ["wallet", "User:1:wallet", "user::wallet", "user:1:", "", "a" * 201, 42]
    )
    def test_invalid_codes(self, code: object) -> None:
        """Codes without a namespace, with empty parts or too long are refused."""
        with pytest.raises(InvalidAccountCode):
            AccountSpec(code, AccountKind.ASSET)  # type: ignore[arg-type]

    def test_kind_from_string_and_unknown_kind(self) -> None:
        """A kind may be given as its string value; an unknown kind is refused."""
        assert AccountSpec("a:b", "asset").kind is AccountKind.ASSET  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            AccountSpec("a:b", "cash")  # type: ignore[arg-type]

    @pytest.mark.parametrize("currency", ["usd", "XXY", "US", 840])
    def test_unknown_currency(self, currency: object) -> None:
        """Only upper-case ISO 4217 codes are currencies."""
        with pytest.raises(UnknownCurrency):
            AccountSpec("a:b", AccountKind.ASSET, currency=currency)  # type: ignore[arg-type]

    @pytest.mark.parametrize("shards", [0, 65, True, 1.0])
    def test_invalid_shards(self, shards: object) -> None:
        """Balance shards are an int from 1 to 64."""
        with pytest.raises(InvalidInput):
            AccountSpec("a:b", AccountKind.ASSET, balance_shards=shards)  # type: ignore[arg-type]

    def test_metadata_must_be_json(self) -> None:
        """Metadata that JSON cannot hold (a datetime, NaN) is refused."""
        with pytest.raises(InvalidInput):
            AccountSpec("a:b", AccountKind.ASSET, metadata={"when": datetime.now(UTC)})
        with pytest.raises(InvalidInput):
            AccountSpec("a:b", AccountKind.ASSET, metadata={"x": float("nan")})

    def test_normal_sign(self) -> None:
        """Assets and expenses are debit-normal; the other kinds credit-normal."""
        assert {k: k.normal_sign for k in AccountKind} == {
            AccountKind.ASSET: 1,
            AccountKind.EXPENSE: 1,
            AccountKind.LIABILITY: -1,
            AccountKind.EQUITY: -1,
            AccountKind.REVENUE: -1,
        }


class TestPostingsAndEntries:
    def test_debit_and_credit_signs(self) -> None:
        """debit() is positive and credit() negative; both take a positive amount."""
        assert Posting.debit("a:b", 5).amount_minor == 5
        assert Posting.credit("a:b", 5).amount_minor == -5
        with pytest.raises(InvalidEntry):
            Posting.debit("a:b", -5)

    @pytest.mark.parametrize("amount", [0, 1.5, True, Decimal("0.5")])
    def test_posting_amounts(self, amount: object) -> None:
        """A posting is a non-zero int of minor units."""
        with pytest.raises(InvalidAmount):
            Posting("a:b", amount)  # type: ignore[arg-type]

    def test_balanced_entry(self) -> None:
        """Postings summing to zero make a valid entry; postings become a tuple."""
        draft = _draft(Posting.debit("a:x", 7), Posting.credit("a:y", 3), Posting.credit("a:z", 4))
        assert isinstance(draft.postings, tuple)

    def test_unbalanced_entry_reports_the_difference(self) -> None:
        """An unbalanced entry names the currency and how far off it is."""
        with pytest.raises(UnbalancedEntry, match=r"\+2 USD") as info:
            _draft(Posting.debit("a:x", 7), Posting.credit("a:y", 5))
        assert info.value.details["imbalance"] == {"USD": 2}

    def test_balance_is_per_currency(self) -> None:
        """USD and EUR must each sum to zero; cross-currency sums do not count."""
        with pytest.raises(UnbalancedEntry):
            _draft(Posting.debit("a:x", 5, "USD"), Posting.credit("a:y", 5, "EUR"))
        _draft(
            Posting.debit("a:x", 5, "USD"),
            Posting.credit("a:y", 5, "USD"),
            Posting.debit("a:z", 3, "EUR"),
            Posting.credit("a:w", 3, "EUR"),
        )

    def test_needs_two_postings(self) -> None:
        """A single posting (or none) is not an entry."""
        with pytest.raises(InvalidEntry, match="two postings"):
            _draft()

    @pytest.mark.parametrize("type_", ["", "Gift", "gift!", "9gift", "x" * 65])
    def test_entry_type_format(self, type_: str) -> None:
        """Entry types are short lower-case identifiers."""
        with pytest.raises(InvalidEntry):
            EntryDraft(type_, (Posting.debit("a:x", 1), Posting.credit("a:y", 1)), "k")

    @pytest.mark.parametrize("key", ["", "   ", "k" * 256, None])
    def test_idempotency_key_required(self, key: object) -> None:
        """Every write carries a non-empty idempotency key of at most 255 characters."""
        with pytest.raises(InvalidEntry):
            EntryDraft("gift", (Posting.debit("a:x", 1), Posting.credit("a:y", 1)), key)  # type: ignore[arg-type]

    def test_effective_at_must_be_aware(self) -> None:
        """A naive datetime is ambiguous money-time and is refused."""
        with pytest.raises(InvalidEntry):
            _draft(
                Posting.debit("a:x", 1),
                Posting.credit("a:y", 1),
                effective_at=datetime(2026, 1, 1),
            )

    def test_fingerprint_ignores_defaulted_time(self) -> None:
        """Two drafts that only differ in an unset effective_at have equal fingerprints."""
        a = _draft(Posting.debit("a:x", 1), Posting.credit("a:y", 1))
        b = _draft(Posting.debit("a:x", 1), Posting.credit("a:y", 1))
        assert a.fingerprint_fields() == b.fingerprint_fields()


class TestBalance:
    def test_credit_normal_available(self) -> None:
        """A wallet (liability) with a pending debit has less available than posted."""
        b = Balance.from_raw(
            "user:1:wallet",
            AccountKind.LIABILITY,
            "USD",
            posted=-500,
            pending_debit=200,
            pending_credit=50,
        )
        assert (b.posted_minor, b.pending_out_minor, b.pending_in_minor) == (500, 200, 50)
        assert b.available_minor == 300
        assert b.pending_minor == -150

    def test_debit_normal_available(self) -> None:
        """An asset's outflows are its pending credits."""
        b = Balance.from_raw(
            "platform:stripe_balance",
            AccountKind.ASSET,
            "USD",
            posted=1000,
            pending_debit=5,
            pending_credit=300,
        )
        assert b.available_minor == 700


def test_nul_characters_are_refused() -> None:
    """NUL in a description or metadata is refused up front (PostgreSQL cannot store it)."""
    legs = (Posting.debit("a:x", 1), Posting.credit("a:y", 1))
    with pytest.raises(InvalidEntry):
        EntryDraft("t", legs, "k", description="a\x00b")
    with pytest.raises(InvalidInput):
        EntryDraft("t", legs, "k", metadata={"note": "a\x00b"})


class TestBuiltDraft:
    """``built_draft``: a draft whose metadata the library built (a gift's): checked as
    any draft but for the metadata, which is kept as given (not copied through JSON)."""

    legs = (Posting.debit("user:1:wallet", 10), Posting.credit("platform:gift_revenue", 10))

    def test_metadata_is_kept_and_equals_a_checked_drafts(self) -> None:
        from spaktok_ledger._domain import built_draft

        metadata = {"sender": "u1", "gift": {"id": "rose", "coins": 10}, "matures_at": None}
        at = datetime(2026, 12, 2, tzinfo=UTC)
        built = built_draft(
            "gift", self.legs, "k", description="d", metadata=metadata, effective_at=at
        )
        assert built.metadata is metadata
        checked = EntryDraft("gift", self.legs, "k", "d", metadata, at)
        assert built == checked
        assert built.fingerprint_fields() == checked.fingerprint_fields()

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"type": "Gift"}, "entry type must match"),
            ({"postings": legs[:1]}, "at least two postings"),
            ({"idempotency_key": ""}, "idempotency"),
            ({"description": "x" * 1001}, "description"),
            ({"effective_at": datetime(2026, 12, 2)}, "timezone-aware"),
        ],
    )
    def test_everything_else_is_checked(self, kwargs: dict, message: str) -> None:
        from spaktok_ledger._domain import built_draft

        args = {
            "type": "gift",
            "postings": self.legs,
            "idempotency_key": "k",
            "description": "",
            "metadata": {},
            "effective_at": None,
        } | kwargs
        with pytest.raises(InvalidEntry, match=message):
            built_draft(
                args["type"],
                args["postings"],
                args["idempotency_key"],
                description=args["description"],
                metadata=args["metadata"],
                effective_at=args["effective_at"],
            )
