"""The library's exceptions: one root, a documented tree.

Every error the library raises on purpose is a :class:`LedgerError`. Errors
that mean "you called it wrong" also subclass the matching builtin
(``ValueError``, ``TypeError``, ``LookupError``) so generic handlers keep
working. Nothing outside the adapters ever sees a driver or ``stripe.*``
exception: adapters translate them with ``raise ... from exc``.

::

    LedgerError
    ├── InvalidInput (ValueError)              bad arguments; nothing was written
    │   ├── InvalidAmount                      not an int minor amount in int64 range
    │   │   ├── InvalidAmountType (TypeError)  float, bool, str... where an int belongs
    │   │   └── BalanceOverflow                a balance would leave signed 64-bit range
    │   ├── UnknownCurrency                    not an ISO 4217 code we know
    │   ├── UnknownLocale                      not a CLDR locale babel knows
    │   ├── InvalidAccountCode
    │   ├── InvalidEntry                       malformed entry (type, postings, metadata)
    │   │   ├── UnbalancedEntry                postings do not sum to zero per currency
    │   │   └── CurrencyMismatch               posting currency != account currency
    │   ├── InvalidSplit                       shares not summing to 10,000 bps, negative...
    │   ├── InvalidCatalogue                   a coin pack or gift catalogue that fails validation
    │   ├── InvalidCursor                      a history cursor that was not ours
    │   ├── UnsupportedCurrency                Stripe (or a provider) cannot handle it
    │   ├── AmountBelowMinimum                 under Stripe's minimum charge
    │   └── GiftRejected                       self-gift, zero quantity, blocked streamer...
    ├── NotFound (LookupError)
    │   ├── UnknownAccount
    │   ├── UnknownEntry
    │   ├── UnknownQuote
    │   ├── UnknownPack
    │   ├── UnknownGift
    │   ├── UnknownUser
    │   ├── UnknownStreamer
    │   ├── UnknownPurchase
    │   ├── UnknownPayout
    │   └── UnknownCase                        no compliance case with this id
    ├── Conflict
    │   ├── IdempotencyConflict                same key, different request
    │   ├── AccountConflict                    account exists with a different definition
    │   ├── AlreadyReversed
    │   ├── HoldNotPending                     hold already posted, voided or expired
    │   └── CaseClosed                         the compliance case was already decided
    ├── InsufficientFunds                      a no-overdraft account would go below zero
    ├── SpendingBlocked                        the wallet owes money after a refund/chargeback
    ├── QuoteExpired
    ├── RateError
    │   ├── RateUnavailable                    provider down, error body, unknown currency
    │   └── RateStale                          the newest rate is older than its limit
    ├── PaymentError
    │   ├── PaymentProviderError               Stripe said no, or could not be reached
    │   ├── WebhookVerificationError           forged, tampered or stale delivery (HTTP 400)
    │   ├── WebhookPayloadError (ValueError)   signed, but not an event we can read
    │   ├── AmountMismatch                     Stripe charged something other than the quote
    │   └── FraudRejected                      the fraud policy refused a purchase
    ├── PayoutError
    │   ├── PayoutsNotEnabled                  KYC incomplete: says which requirement is due
    │   ├── PayoutBelowMinimum
    │   └── PayoutLimitExceeded                daily/monthly cap
    ├── ComplianceError
    │   ├── MonitoringRefused                  a monitoring rule refused the movement
    │   ├── DataErased                         the personal data was erased (its key destroyed)
    │   ├── EncryptionError                    a key is missing from the keyring, or a ciphertext
    │   │                                      fails authentication
    │   └── ScreeningUnavailable               the sanctions screening provider did not answer
    ├── LedgerBusy                             transient contention outlasted the retries
    ├── PublishError                           a broker refused outbox events (relayed again)
    └── SchemaError                            tables missing or at an unexpected revision
        └── UnitsMismatch                      stored amounts use another exponent than the table
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AccountConflict",
    "AlreadyReversed",
    "AmountBelowMinimum",
    "AmountMismatch",
    "BalanceOverflow",
    "CaseClosed",
    "ComplianceError",
    "Conflict",
    "CurrencyMismatch",
    "DataErased",
    "EncryptionError",
    "FraudRejected",
    "GiftRejected",
    "HoldNotPending",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAccountCode",
    "InvalidAmount",
    "InvalidAmountType",
    "InvalidCatalogue",
    "InvalidCursor",
    "InvalidEntry",
    "InvalidInput",
    "InvalidSplit",
    "LedgerBusy",
    "LedgerError",
    "LedgerWarning",
    "MonitoringRefused",
    "NotFound",
    "PaymentError",
    "PaymentProviderError",
    "PayoutBelowMinimum",
    "PayoutError",
    "PayoutLimitExceeded",
    "PayoutsNotEnabled",
    "PublishError",
    "QuoteExpired",
    "RateError",
    "RateStale",
    "RateUnavailable",
    "SchemaError",
    "ScreeningUnavailable",
    "SpendingBlocked",
    "UnbalancedEntry",
    "UnitsMismatch",
    "UnknownAccount",
    "UnknownCase",
    "UnknownCurrency",
    "UnknownEntry",
    "UnknownGift",
    "UnknownLocale",
    "UnknownPack",
    "UnknownPayout",
    "UnknownPurchase",
    "UnknownQuote",
    "UnknownStreamer",
    "UnknownUser",
    "UnsupportedCurrency",
    "WebhookPayloadError",
    "WebhookVerificationError",
]


class LedgerWarning(UserWarning):
    """Warnings the library emits (the test suite turns them into errors)."""


class LedgerError(Exception):
    """Root of every error the library raises on purpose.

    ``code`` is a stable, machine-readable name (the class name in snake case)
    that hosts can put in API responses; ``details`` holds the values that
    explain the error (amounts, account codes), never secrets.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, Any] = details

    @property
    def code(self) -> str:
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")

    def __str__(self) -> str:
        return self.message


# --- misuse ---------------------------------------------------------------


class InvalidInput(LedgerError, ValueError):
    """An argument is malformed; nothing was written."""


class InvalidAmount(InvalidInput):
    """An amount is not an integer number of minor units within signed 64-bit range."""


class InvalidAmountType(InvalidAmount, TypeError):
    """An amount has the wrong type (float, bool, str...): money is ``int`` minor units."""


class BalanceOverflow(InvalidAmount):
    """The entry would take a balance outside signed 64-bit range; nothing was written.

    Each posting can be within range while their sum on one account is not:
    balances are checked when they are written (and guarded by a CHECK
    constraint on both backends), so the books never hold a wrapped or
    floating-point balance.
    """


class UnknownCurrency(InvalidInput):
    """A currency code is not an ISO 4217 code the library knows."""


class UnknownLocale(InvalidInput):
    """A locale is not a CLDR identifier or BCP 47 tag babel knows."""


class InvalidAccountCode(InvalidInput):
    """An account code is not of the form ``namespace:part[:part...]``."""


class InvalidEntry(InvalidInput):
    """A journal entry is malformed (type, postings, metadata, times)."""


class UnbalancedEntry(InvalidEntry):
    """An entry's postings do not sum to zero in every currency."""


class CurrencyMismatch(InvalidEntry):
    """A posting's currency differs from its account's currency."""


class InvalidSplit(InvalidInput):
    """Revenue-split shares are invalid (negative, or not summing to 10,000 bps)."""


class InvalidCatalogue(InvalidInput):
    """A coin-pack or gift catalogue failed validation."""


class InvalidCursor(InvalidInput):
    """A pagination cursor was not produced by this library for this query."""


class UnsupportedCurrency(InvalidInput):
    """The payment provider (or rate provider) cannot handle this currency."""


class AmountBelowMinimum(InvalidInput):
    """The amount is below the payment provider's minimum charge for its currency."""


class GiftRejected(InvalidInput):
    """A gift cannot be sent: to yourself, zero quantity, blocked streamer..."""


# --- lookups ---------------------------------------------------------------


class NotFound(LedgerError, LookupError):
    """Something the call names does not exist."""


class UnknownAccount(NotFound):
    """No account has this code."""


class UnknownEntry(NotFound):
    """No journal entry has this id or idempotency key."""


class UnknownQuote(NotFound):
    """No price quote has this id."""


class UnknownPack(NotFound):
    """The coin-pack catalogue has no pack with this id."""


class UnknownGift(NotFound):
    """The gift catalogue has no gift with this id."""


class UnknownUser(NotFound):
    """No wallet has been opened for this user."""


class UnknownStreamer(NotFound):
    """No streamer with this id has been registered."""


class UnknownPurchase(NotFound):
    """No purchase matches this id or Stripe object."""


class UnknownPayout(NotFound):
    """No payout matches this id or Stripe object."""


class UnknownCase(NotFound):
    """No compliance case has this id."""


# --- state conflicts -------------------------------------------------------


class Conflict(LedgerError):
    """The request conflicts with what is already recorded."""


class IdempotencyConflict(Conflict):
    """The idempotency key was already used for a different request."""


class AccountConflict(Conflict):
    """An account with this code exists with a different definition."""


class AlreadyReversed(Conflict):
    """The entry has already been reversed (an entry can be reversed once)."""


class HoldNotPending(Conflict):
    """The hold was already posted, voided or expired."""


class CaseClosed(Conflict):
    """The compliance case was already decided; a decision is final."""


# --- business refusals -----------------------------------------------------


class InsufficientFunds(LedgerError):
    """A no-overdraft account's available balance would go below zero."""


class SpendingBlocked(LedgerError):
    """The wallet owes money (a refund or chargeback of spent coins) and cannot spend."""


class QuoteExpired(LedgerError):
    """The price quote's expiry time has passed."""


class RateError(LedgerError):
    """An exchange rate could not be used."""


class RateUnavailable(RateError):
    """No provider could give the rate (network, error body, unknown currency)."""


class RateStale(RateError):
    """The newest rate available is older than the staleness limit."""


class PaymentError(LedgerError):
    """Something went wrong with a payment or a payment-provider message."""


class PaymentProviderError(PaymentError):
    """The payment provider refused a call or could not be reached.

    ``retryable`` tells whether the same call (same idempotency key) may be
    retried safely: timeouts and connection errors are; card declines and
    invalid requests are not.
    """

    def __init__(self, message: str, *, retryable: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.retryable = retryable


class WebhookVerificationError(PaymentError):
    """The webhook's signature is missing, wrong, or its timestamp is too old (HTTP 400)."""


class WebhookPayloadError(PaymentError, ValueError):
    """The webhook is signed correctly but its body is not an event we can read."""


class AmountMismatch(PaymentError):
    """The provider charged an amount or currency different from the quote."""


class FraudRejected(PaymentError):
    """The fraud policy or a velocity limit refused the purchase."""


class PayoutError(LedgerError):
    """A payout cannot be made."""


class PayoutsNotEnabled(PayoutError):
    """The streamer's connected account cannot receive payouts (KYC incomplete)."""


class PayoutBelowMinimum(PayoutError):
    """The payout is below the configured minimum."""


class PayoutLimitExceeded(PayoutError):
    """The payout would exceed a daily or monthly cap."""


# --- compliance -------------------------------------------------------------


class ComplianceError(LedgerError):
    """Transaction monitoring, encryption at rest or screening stopped the call."""


class MonitoringRefused(ComplianceError):
    """A transaction-monitoring rule refused the movement; nothing was written but the case.

    ``details`` name the ``rule``, the ``subject_id`` and the ``case_id`` that records
    the refusal for review.
    """

    pending: object = None
    """Inside the movement's transaction: the check whose case is still to be recorded
    (the service records it after the rollback, then raises without it)."""


class DataErased(ComplianceError):
    """The personal data asked for was erased: its data key was destroyed (``erase_user``)."""


class EncryptionError(ComplianceError):
    """A ciphertext names a key the keyring does not hold, or fails authentication
    (tampered, or decrypted for another purpose). A configuration problem, not bad input."""


class ScreeningUnavailable(ComplianceError):
    """The sanctions / identity screening provider could not be reached. Safe to retry."""


# --- infrastructure --------------------------------------------------------


class LedgerBusy(LedgerError):
    """Contention (deadlocks, serialization failures, a locked SQLite file)
    outlasted the library's bounded retries. Safe to retry with the same key."""


class PublishError(LedgerError):
    """A message broker did not accept a batch of outbox events: nothing was
    acknowledged, and the relay publishes them again (``details``: ``broker``)."""


class SchemaError(LedgerError):
    """The ledger's tables are missing or not at the expected migration."""


class UnitsMismatch(SchemaError):
    """The database holds amounts written with another exponent than this library uses.

    Raised on start (``migrate()``, ``Ledger.check_schema()``, ``GiftEconomy.
    setup()``) instead of reading them at the wrong scale. ``details["found"]``
    lists each table, column, currency, stored exponent, expected exponent and
    row count; the message names the command that rescales them
    (``spaktok-ledger migrate-units``).
    """
