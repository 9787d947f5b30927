"""HTTP rate providers: ECB (default), Open Exchange Rates, Fixer. Needs the ``fx`` extra.

The only module of the library that imports ``httpx``. Each adapter takes an
optional ``httpx.Client`` (tests pass one built on ``httpx.MockTransport``),
sends every request with an explicit timeout, and translates every failure —
network errors, timeouts, HTTP statuses, provider error bodies, malformed
payloads — into ``RateUnavailable`` with ``raise ... from exc``.

Secrets never reach messages or logs: Open Exchange Rates gets its app id in
the ``Authorization: Token`` header (not the URL), and Fixer's
``access_key``, which its API only accepts in the query string, is redacted
from ``httpx``'s request log line by a logging filter this module installs
on the ``httpx`` logger. Error messages name the exception type, never the
URL; ``repr()`` masks the key.
"""

from __future__ import annotations

import logging
import urllib.parse
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import ClassVar, Final, Self

from spaktok_ledger._errors import InvalidInput, RateUnavailable
from spaktok_ledger.fx._parse import parse_ecb_xml, parse_fixer_json, parse_oxr_json
from spaktok_ledger.fx._rates import Clock, Rate, RateTable, utc_now

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the HTTP rate providers need httpx: pip install 'spaktok-ledger[fx]'"
    ) from exc

__all__ = [
    "DEFAULT_TIMEOUT",
    "ECB_DAILY_URL",
    "FIXER_LATEST_URL",
    "MAX_RESPONSE_BYTES",
    "OXR_LATEST_URL",
    "ECBRateProvider",
    "FixerRateProvider",
    "OpenExchangeRatesProvider",
]

ECB_DAILY_URL: Final = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"
OXR_LATEST_URL: Final = "https://openexchangerates.org/api/latest.json"
FIXER_LATEST_URL: Final = "http://data.fixer.io/api/latest"
"""Fixer's free plan serves plain HTTP only, so the key crosses the network unencrypted;
paid plans can (and should) use ``https://``."""

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
"""Per request: 5 s to connect, 10 s for each read/write/pool wait."""

MAX_RESPONSE_BYTES: Final = 2_000_000
"""A rate table is a few kilobytes; anything this large is not one."""

_USER_AGENT: Final = "spaktok-ledger (+https://github.com/spaktok/spaktok-ledger)"


class _RedactSecrets(logging.Filter):
    """Replace registered secrets in log records (installed on the ``httpx`` logger)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        for secret in tuple(self.secrets):  # a snapshot: providers may register concurrently
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_REDACTOR: Final = _RedactSecrets()


def _register_secret(secret: str) -> None:
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    _REDACTOR.secrets.update(form for form in forms if form)
    httpx_logger = logging.getLogger("httpx")
    if _REDACTOR not in httpx_logger.filters:
        httpx_logger.addFilter(_REDACTOR)


def _check_secret(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        # Never echo the value: it may be a real key with a typo.
        raise InvalidInput(f"{name} must be a non-empty string")
    return value.strip()


class _HttpRateProvider(ABC):
    """Shared plumbing: owned-or-borrowed client, timeouts, error translation, the secret."""

    source: ClassVar[str]
    default_ttl: ClassVar[timedelta]
    default_max_age: ClassVar[timedelta]

    def __init__(
        self,
        *,
        client: httpx.Client | None,
        url: str,
        timeout: httpx.Timeout | float,
        clock: Clock,
        secret: tuple[str, str] | None = None,
    ) -> None:
        """``secret``: (value, name) of the provider's API key, checked, redacted everywhere."""
        self._secret: str | None = None
        if secret is not None:
            self._secret = _check_secret(*secret)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False)
        self._url = url
        self._timeout = timeout
        self._clock = clock
        if self._secret is not None:
            _register_secret(self._secret)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client if this provider created it (a borrowed one is left open)."""
        if self._owns_client:
            self._client.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _get(
        self, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        request_headers = {"User-Agent": _USER_AGENT, **(headers or {})}
        try:
            response = self._client.get(
                self._url, params=params, headers=request_headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise RateUnavailable(
                f"{self.source}: request timed out ({type(exc).__name__})", source=self.source
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RateUnavailable(
                f"{self.source}: request failed ({type(exc).__name__})", source=self.source
            ) from exc
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise RateUnavailable(
                f"{self.source}: response larger than {MAX_RESPONSE_BYTES} bytes",
                source=self.source,
            )
        return response

    def _http_error(self, response: httpx.Response, detail: str = "") -> RateUnavailable:
        return RateUnavailable(
            f"{self.source}: HTTP {response.status_code}" + (f": {detail}" if detail else ""),
            source=self.source,
            status=response.status_code,
        )

    @abstractmethod
    def rates(self) -> RateTable:
        """Fetch and parse the provider's current table."""

    def rate(self, base: str, quote: str) -> Rate:
        """Fetch the table and derive ``base`` -> ``quote`` (wrap in ``CachedRateProvider``)."""
        return self.rates().rate(base, quote)


class ECBRateProvider(_HttpRateProvider):
    """The European Central Bank's daily euro reference rates: free, no key, the default.

    About 30 currencies against EUR, published once per TARGET working day
    around 16:00 CET; other bases are cross rates. Pass ``url`` to use a
    mirror or the 90-day file (the newest day in it is used).

    >>> import httpx
    >>> xml = b'''<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
    ...   xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref"><Cube>
    ...   <Cube time="2024-06-28"><Cube currency="USD" rate="1.0705"/></Cube>
    ... </Cube></gesmes:Envelope>'''
    >>> transport = httpx.MockTransport(lambda request: httpx.Response(200, content=xml))
    >>> client = httpx.Client(transport=transport)
    >>> ECBRateProvider(client=client).rate("EUR", "USD").value
    Decimal('1.0705')
    """

    source: ClassVar[str] = "ecb"
    default_ttl: ClassVar[timedelta] = timedelta(hours=1)
    default_max_age: ClassVar[timedelta] = timedelta(days=5, hours=12)

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        url: str = ECB_DAILY_URL,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(client=client, url=url, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        return f"ECBRateProvider(url={self._url!r})"

    def rates(self) -> RateTable:
        """Fetch and parse the reference rates."""
        response = self._get(headers={"Accept": "application/xml, text/xml"})
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response)
        return parse_ecb_xml(response.content, fetched_at=self._clock(), source=self.source)


class OpenExchangeRatesProvider(_HttpRateProvider):
    """Open Exchange Rates ``latest.json``: ~170 currencies, USD base, hourly on the free plan.

    The app id travels in the ``Authorization: Token`` header, never in the
    URL, so it cannot leak through URLs in logs or exceptions.
    """

    source: ClassVar[str] = "openexchangerates"
    default_ttl: ClassVar[timedelta] = timedelta(hours=1)
    default_max_age: ClassVar[timedelta] = timedelta(days=3)

    def __init__(
        self,
        app_id: str,
        *,
        client: httpx.Client | None = None,
        url: str = OXR_LATEST_URL,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            client=client, url=url, timeout=timeout, clock=clock, secret=(app_id, "app_id")
        )

    def __repr__(self) -> str:
        return f"OpenExchangeRatesProvider(app_id='***', url={self._url!r})"

    def rates(self) -> RateTable:
        """Fetch and parse the latest rates."""
        assert self._secret is not None
        response = self._get(headers={"Authorization": f"Token {self._secret}"})
        if response.status_code != httpx.codes.OK:
            # OXR error bodies are JSON with the reason; use it when readable.
            try:
                parse_oxr_json(
                    response.content,
                    fetched_at=self._clock(),
                    source=self.source,
                    scrub=self._scrub,
                )
            except RateUnavailable as exc:
                detail = exc.message.removeprefix(f"{self.source}: ")
                raise self._http_error(
                    response, detail if "provider_error" in exc.details else ""
                ) from exc
            raise self._http_error(response)
        return parse_oxr_json(
            response.content, fetched_at=self._clock(), source=self.source, scrub=self._scrub
        )


class FixerRateProvider(_HttpRateProvider):
    """Fixer ``/latest``: ~170 currencies; EUR base on the free plan (USD prices are crosses).

    Fixer answers errors with HTTP 200 and ``"success": false``; both that
    and non-200 statuses become ``RateUnavailable``. Its ``access_key`` must
    be in the query string; it is redacted from ``httpx``'s logs.
    """

    source: ClassVar[str] = "fixer"
    default_ttl: ClassVar[timedelta] = timedelta(hours=8)
    default_max_age: ClassVar[timedelta] = timedelta(days=3)

    def __init__(
        self,
        access_key: str,
        *,
        client: httpx.Client | None = None,
        url: str = FIXER_LATEST_URL,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            client=client, url=url, timeout=timeout, clock=clock, secret=(access_key, "access_key")
        )

    def __repr__(self) -> str:
        return f"FixerRateProvider(access_key='***', url={self._url!r})"

    def rates(self) -> RateTable:
        """Fetch and parse the latest rates."""
        assert self._secret is not None
        response = self._get(params={"access_key": self._secret})
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response)
        return parse_fixer_json(
            response.content, fetched_at=self._clock(), source=self.source, scrub=self._scrub
        )
