"""Local prices that stick: quotes made from the catalogue and a rate provider,
stored in the ledger's database so that checkout charges exactly what was shown.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._catalogue import PackCatalogue
from spaktok_ledger._clock import Clock
from spaktok_ledger._currency import is_stripe_chargeable, known_currencies, validate_currency
from spaktok_ledger._errors import InvalidInput, UnknownQuote
from spaktok_ledger._format import default_currency_for_locale, parse_locale
from spaktok_ledger._pricing import (
    DEFAULT_QUOTE_TTL,
    PriceEnding,
    Quote,
    check_quote_valid,
    make_quote,
)
from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._store import Ledger
from spaktok_ledger._validate import check_text
from spaktok_ledger.fx import RateProvider

__all__ = ["Pricing", "QuoteStore", "quote_currency"]


def quote_currency(*, currency: str | None, locale: str | None) -> str:
    """The currency to quote a viewer in: the one asked for, else their locale's if
    Stripe can charge it, else USD.

    >>> quote_currency(currency=None, locale="ja_JP")
    'JPY'
    """
    if currency is not None:
        return validate_currency(currency)
    if locale is None:
        return "USD"
    try:
        local = default_currency_for_locale(locale)
    except InvalidInput:
        parse_locale(locale)  # a locale that does not exist is the caller's error
        return "USD"
    # CLDR may name a currency the ledger's ISO 4217 table does not hold.
    return local if local in known_currencies() and is_stripe_chargeable(local) else "USD"


class QuoteStore:
    """Quotes in the ledger's database (table ``{prefix}quotes``), written once.

    >>> from spaktok_ledger import Ledger
    >>> store = QuoteStore(Ledger("sqlite://"))
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._table = ledger.tables.quotes

    def save(self, quote: Quote, *, user_id: str | None = None) -> Quote:
        """Store ``quote`` (idempotent: saving the same quote again is a no-op)."""
        if not isinstance(quote, Quote):
            raise InvalidInput(f"expected a Quote, got {type(quote).__name__}")
        user = check_party_id(user_id, "user_id") if user_id is not None else None
        t = self._table

        def write(tx: Ledger) -> None:
            conn = tx.connection()
            existing = conn.execute(sa.select(t.c.quote).where(t.c.id == quote.id)).scalar()
            if existing is not None:
                if Quote.from_dict(existing) != quote:
                    raise InvalidInput(f"quote id {quote.id} is taken by another quote")
                return
            conn.execute(
                t.insert(),
                {
                    "id": quote.id,
                    "pack_id": quote.pack_id,
                    "user_id": user,
                    "currency": quote.currency,
                    "local_amount_minor": quote.local_amount_minor,
                    "usd_price_minor": quote.usd_price_minor,
                    "rate": str(quote.rate),
                    "quote": quote.to_dict(),
                    "created_at": quote.created_at,
                    "expires_at": quote.expires_at,
                },
            )

        self._ledger.atomic(write)
        return quote

    def get(self, quote_id: str) -> Quote:
        """The stored quote, expired or not (``UnknownQuote`` if none)."""
        return self._ledger.read(lambda conn: self.load(conn, quote_id))

    def load(self, conn: Connection, quote_id: str) -> Quote:
        """Read a quote on ``conn`` (inside a caller's transaction)."""
        if not isinstance(quote_id, str) or not quote_id or len(quote_id) > 64:
            raise UnknownQuote(f"no quote {quote_id!r}", quote_id=repr(quote_id)[:80])
        check_text(quote_id, "quote_id", max_length=64)
        t = self._table
        found = conn.execute(
            sa.select(t.c.quote, t.c.local_exponent).where(t.c.id == quote_id)
        ).first()
        if found is None:
            raise UnknownQuote(f"no quote {quote_id!r}", quote_id=quote_id)
        # The row's recorded units, not whatever the current table says: a quote
        # written at another exponent is refused (UnitsMismatch), never misread.
        return Quote.from_dict({**found.quote, "exponent": found.local_exponent})

    def get_valid(self, quote_id: str, now: datetime) -> Quote:
        """The stored quote if it can still be charged at ``now``, else ``QuoteExpired``."""
        quote = self.get(quote_id)
        check_quote_valid(quote, now)
        return quote


class Pricing:
    """Prices coin packs for viewers: the catalogue, a rate provider, a quote store.

    ``quote()`` is the one call behind a host's price endpoint::

        pricing = Pricing(ledger, catalogue, CachedRateProvider(ECBRateProvider()))
        quote = pricing.quote("starter", locale="de_DE")   # EUR, formatted for Germany
        quote.display    # '4,66 €'

    A viewer whose locale's currency Stripe cannot charge (or who gives no
    locale or currency) is quoted in USD.
    """

    def __init__(
        self,
        ledger: Ledger,
        catalogue: PackCatalogue,
        rates: RateProvider,
        *,
        ttl: timedelta = DEFAULT_QUOTE_TTL,
        markup_bps: int = 0,
        price_ending: PriceEnding | Callable[[str], PriceEnding | None] | None = None,
        coin_value_usd_minor: int = 1,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(catalogue, PackCatalogue):
            raise InvalidInput("catalogue must be a PackCatalogue")
        self.ledger = ledger
        self.catalogue = catalogue
        self.rates = rates
        self.store = QuoteStore(ledger)
        self.ttl = ttl
        self.markup_bps = markup_bps
        self.price_ending = price_ending
        self.coin_value_usd_minor = coin_value_usd_minor
        self.clock: Clock = clock or ledger.now

    def currency_for(self, *, currency: str | None, locale: str | None) -> str:
        """The currency to quote: the one asked for, else the locale's, else USD."""
        return quote_currency(currency=currency, locale=locale)

    def quote(
        self,
        pack_id: str,
        *,
        currency: str | None = None,
        locale: str | None = None,
        user_id: str | None = None,
    ) -> Quote:
        """Price ``pack_id`` for a viewer now, store the quote, and return it."""
        pack = self.catalogue.get(pack_id)
        code = self.currency_for(currency=currency, locale=locale)
        ending = self.price_ending(code) if callable(self.price_ending) else self.price_ending
        quote = make_quote(
            pack,
            code,
            self.rates,
            self.clock,
            self.ttl,
            markup_bps=self.markup_bps,
            price_ending=ending,
            locale=locale,
            coin_value_usd_minor=self.coin_value_usd_minor,
        )
        return self.store.save(quote, user_id=user_id)

    def get(self, quote_id: str) -> Quote:
        return self.store.get(quote_id)
