"""Exchange rates: rate tables and cross rates, the HTTP adapters (offline), caching, fallback."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spaktok_ledger.fx as fx
from spaktok_ledger._errors import (
    InvalidInput,
    RateError,
    RateStale,
    RateUnavailable,
    UnknownCurrency,
)
from spaktok_ledger.fx import (
    CROSS_RATE_CONTEXT,
    CachedRateProvider,
    ECBRateProvider,
    FallbackRateProvider,
    FixerRateProvider,
    OpenExchangeRatesProvider,
    Rate,
    RateTable,
    StaticRateProvider,
    _http,
    parse_ecb_xml,
    parse_fixer_json,
    parse_oxr_json,
)
from tests.strategies import rates

# --- fixtures: the provider samples ----------------------------------------------


def fixtures_root() -> Path:
    """The fixtures directory: $SPAKTOK_FIXTURES if set, else the copies in tests/fixtures."""
    env = os.environ.get("SPAKTOK_FIXTURES")
    return Path(env) if env else Path(__file__).resolve().parent / "fixtures"


FX_SAMPLES = fixtures_root() / "fx"
SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "fx"

NOW = datetime(2024, 6, 28, 18, 0, tzinfo=UTC)
SECRET = "s3cr3t-KEY-0123456789abcdef"


def sample(name: str) -> bytes:
    return (FX_SAMPLES / name).read_bytes()


def fixed_clock(now: datetime = NOW) -> Callable[[], datetime]:
    return lambda: now


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def mock_client(
    body: bytes | Callable[[httpx.Request], httpx.Response],
    status: int = 200,
    requests: list[httpx.Request] | None = None,
) -> httpx.Client:
    """An httpx.Client whose transport answers every request with ``body`` (or a handler)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        if callable(body):
            return body(request)
        return httpx.Response(status, content=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


def ecb(client: httpx.Client) -> ECBRateProvider:
    return ECBRateProvider(client=client, clock=fixed_clock())


def oxr(client: httpx.Client) -> OpenExchangeRatesProvider:
    return OpenExchangeRatesProvider(SECRET, client=client, clock=fixed_clock())


def fixer(client: httpx.Client) -> FixerRateProvider:
    return FixerRateProvider(SECRET, client=client, clock=fixed_clock())


@dataclass(frozen=True)
class Sample:
    """How to serve a sample file and what the adapter must make of it."""

    adapter: Callable[[httpx.Client], object]
    status: int
    base: str | None = None  # a successful table's base
    published_at: datetime | None = None
    count: int | None = None  # currencies in the table, base included
    error: str | None = None  # text the RateUnavailable must contain


SAMPLES = {
    "ecb-eurofxref-daily.xml": Sample(
        ecb, 200, "EUR", datetime(2024, 6, 28, 14, 0, tzinfo=UTC), count=31
    ),
    "openexchangerates-latest.json": Sample(
        oxr, 200, "USD", datetime(2024, 6, 28, 16, 0, tzinfo=UTC), count=21
    ),
    "openexchangerates-error.json": Sample(oxr, 401, error="HTTP 401: invalid_app_id"),
    "fixer-latest.json": Sample(
        fixer, 200, "EUR", datetime(2024, 6, 28, 16, 0, tzinfo=UTC), count=8
    ),
    "fixer-error-http200.json": Sample(
        fixer, 200, error="error 105 base_currency_access_restricted"
    ),
}


def test_every_fx_sample_has_an_expectation():
    """Each sample in fixtures/fx is exercised below, so a new sample cannot go untested."""
    files = {path.name for path in FX_SAMPLES.iterdir() if path.name != "README.md"}
    assert files == set(SAMPLES)


def test_repo_copies_match_the_shared_samples():
    """The copies in tests/fixtures/fx are byte-identical to the shared originals when present."""
    if not SHARED_SAMPLES.is_dir():
        return  # a clone without the shared workspace: the copies are the source of truth
    for name in SAMPLES:
        assert (SHARED_SAMPLES / name).read_bytes() == sample(name), name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_adapter_reads_every_sample(name):
    """Every provider sample goes through its adapter offline: a table, or RateUnavailable."""
    spec = SAMPLES[name]
    provider = spec.adapter(mock_client(sample(name), spec.status))
    if spec.error is not None:
        with pytest.raises(RateUnavailable, match=spec.error):
            provider.rates()
        return
    table = provider.rates()
    assert table.base == spec.base
    assert table.published_at == spec.published_at
    assert table.fetched_at == NOW
    assert len(table.currencies) == spec.count
    assert all(isinstance(value, Decimal) for value in table.rates.values())


# --- ECB ---------------------------------------------------------------------------


def test_ecb_rates_are_read_as_published():
    """ECB values become exact Decimals, never floats."""
    table = ecb(mock_client(sample("ecb-eurofxref-daily.xml"))).rates()
    assert table.rates["USD"] == Decimal("1.0705")
    assert str(table.rates["GBP"]) == "0.84638"
    assert str(table.rates["IDR"]) == "17487.21"
    assert table.rates["EUR"] == 1


def test_ecb_cross_rate_through_eur():
    """USD->JPY from the EUR table is EUR->JPY / EUR->USD in the stated context."""
    rate = ecb(mock_client(sample("ecb-eurofxref-daily.xml"))).rate("USD", "JPY")
    assert rate.value == CROSS_RATE_CONTEXT.divide(Decimal("171.94"), Decimal("1.0705"))
    assert rate.value == Decimal("160.61653432975245213")
    assert (rate.base, rate.quote, rate.via, rate.source) == ("USD", "JPY", "EUR", "ecb")


def test_ecb_direct_and_inverse_rates():
    """EUR->GBP is the published value; GBP->EUR is its inverse and not a cross."""
    provider = ecb(mock_client(sample("ecb-eurofxref-daily.xml")))
    assert provider.rate("EUR", "GBP").value == Decimal("0.84638")
    inverse = provider.rate("GBP", "EUR")
    assert inverse.value == CROSS_RATE_CONTEXT.divide(1, Decimal("0.84638"))
    assert inverse.via is None
    assert provider.rate("USD", "USD").value == 1


def test_ecb_lacks_a_currency():
    """A currency the ECB does not publish raises RateUnavailable naming it."""
    provider = ecb(mock_client(sample("ecb-eurofxref-daily.xml")))
    with pytest.raises(RateUnavailable, match="VND"):
        provider.rate("USD", "VND")


def test_unknown_currency_codes_are_misuse_not_unavailability():
    """A code that is not ISO 4217 raises UnknownCurrency, not RateUnavailable."""
    provider = ecb(mock_client(sample("ecb-eurofxref-daily.xml")))
    with pytest.raises(UnknownCurrency):
        provider.rate("USD", "ZZZ")


def test_ecb_publication_time_follows_frankfurt_summer_and_winter_time():
    """A table dated D counts as published at 16:00 Frankfurt time (CEST or CET)."""
    winter = _ecb_xml({"2024-01-05": {"USD": "1.0921"}})
    table = parse_ecb_xml(winter, fetched_at=NOW)
    assert table.published_at == datetime(2024, 1, 5, 15, 0, tzinfo=UTC)


def test_ecb_history_file_uses_the_newest_day():
    """A multi-day file (the 90-day history) yields the newest day's rates."""
    xml = _ecb_xml({"2024-06-27": {"USD": "1.0683"}, "2024-06-28": {"USD": "1.0705"}})
    table = parse_ecb_xml(xml, fetched_at=NOW)
    assert table.rates["USD"] == Decimal("1.0705")
    assert table.published_at.date().isoformat() == "2024-06-28"


def _ecb_xml(days: dict[str, dict[str, str]]) -> bytes:
    cubes = "".join(
        f"<Cube time='{day}'>"
        + "".join(f"<Cube currency='{code}' rate='{rate}'/>" for code, rate in rates.items())
        + "</Cube>"
        for day, rates in days.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">'
        f"<Cube>{cubes}</Cube></gesmes:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<gesmes:Envelope", "malformed XML"),
        (b"not xml at all", "malformed XML"),
        (b"<Envelope><Cube/></Envelope>", "no dated Cube"),
        (_ecb_xml({"2024-13-45": {"USD": "1.07"}}), "malformed date"),
        (_ecb_xml({"2024-06-28": {"USD": "1,0705"}}), "not a number"),
        (_ecb_xml({"2024-06-28": {"USD": "-1.07"}}), "not positive"),
        (_ecb_xml({"2024-06-28": {"USD": "NaN"}}), "not positive"),
        (_ecb_xml({"2024-06-28": {}}), "no rates"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">]><Cube time="&lol;"/>',
            "DTD",
        ),
    ],
)
def test_malformed_ecb_responses(content, message):
    """Malformed or hostile ECB documents raise RateUnavailable, never parse."""
    provider = ecb(mock_client(content))
    with pytest.raises(RateUnavailable, match=message):
        provider.rates()


def test_ecb_http_error_status():
    """A non-200 answer raises RateUnavailable with the status in the details."""
    with pytest.raises(RateUnavailable, match="HTTP 503") as info:
        ecb(mock_client(b"maintenance", 503)).rates()
    assert info.value.details["status"] == 503


# --- Open Exchange Rates ------------------------------------------------------------


def test_oxr_rates_and_request_shape():
    """OXR rates are USD-based Decimals; the app id travels in the header, not the URL."""
    requests: list[httpx.Request] = []
    provider = oxr(mock_client(sample("openexchangerates-latest.json"), requests=requests))
    rate = provider.rate("USD", "KWD")
    assert rate.value == Decimal("0.30672")
    assert rate.via is None
    assert provider.rates().rates["USD"] == 1
    (request, _) = requests
    assert request.headers["Authorization"] == f"Token {SECRET}"
    assert SECRET not in str(request.url)
    assert str(request.url) == "https://openexchangerates.org/api/latest.json"


def test_oxr_error_body_with_401():
    """The OXR 401 error body becomes RateUnavailable with the status and OXR's message."""
    with pytest.raises(RateUnavailable) as info:
        oxr(mock_client(sample("openexchangerates-error.json"), 401)).rates()
    assert info.value.details["status"] == 401
    assert "Invalid App ID" in str(info.value)


def test_oxr_error_status_without_a_json_body():
    """A non-JSON error page still raises RateUnavailable with the status."""
    with pytest.raises(RateUnavailable, match=r"HTTP 502$"):
        oxr(mock_client(b"<html>bad gateway</html>", 502)).rates()


def test_oxr_skips_codes_that_are_not_currencies():
    """Codes like BTC in a provider's table are skipped, not errors."""
    body = b'{"timestamp": 1719590400, "base": "USD", "rates": {"BTC": 0.0000163, "EUR": 0.9}}'
    table = parse_oxr_json(body, fetched_at=NOW)
    assert set(table.rates) == {"USD", "EUR"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"timestamp": 1719590400, "base": "USD"}', "missing rates"),
        (b'{"timestamp": 1719590400, "base": "USD", "rates": {"EUR": "abc"}}', "not a number"),
        (b'{"timestamp": 1719590400, "base": "USD", "rates": {"EUR": NaN}}', "malformed JSON"),
        (b'{"timestamp": 1719590400, "base": "USD", "rates": {"EUR": -1}}', "not positive"),
        (b'{"timestamp": 1719590400, "base": "USD", "rates": {"EUR": true}}', "not a number"),
        (b'{"base": "USD", "rates": {"EUR": 0.9}}', "timestamp"),
        (b'{"timestamp": true, "base": "USD", "rates": {"EUR": 0.9}}', "timestamp"),
        (b'{"timestamp": 1719590400, "base": "XXXX", "rates": {"EUR": 0.9}}', "base currency"),
        (b'{"timestamp": 1719590400, "base": "USD", "rates": {"USD": 2}}', "inconsistent"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_malformed_oxr_responses(content, message):
    """Malformed OXR payloads raise RateUnavailable."""
    with pytest.raises(RateUnavailable, match=message):
        oxr(mock_client(content)).rates()


# --- Fixer --------------------------------------------------------------------------


def test_fixer_cross_rates_from_the_eur_base():
    """Fixer's free plan is EUR-based: USD prices are crosses through EUR."""
    requests: list[httpx.Request] = []
    provider = fixer(mock_client(sample("fixer-latest.json"), requests=requests))
    rate = provider.rate("USD", "BRL")
    assert rate.value == CROSS_RATE_CONTEXT.divide(Decimal("5.8915"), Decimal("1.0705"))
    assert rate.via == "EUR"
    assert requests[0].url.params["access_key"] == SECRET


def test_fixer_http200_error():
    """Fixer's success:false body with HTTP 200 raises RateUnavailable with its code."""
    with pytest.raises(RateUnavailable) as info:
        fixer(mock_client(sample("fixer-error-http200.json"))).rates()
    assert info.value.details["provider_code"] == 105
    assert info.value.details["provider_error"] == "base_currency_access_restricted"


def test_fixer_missing_success_flag_is_an_error():
    """A Fixer body without success:true is not trusted as a table."""
    with pytest.raises(RateUnavailable, match="error None error"):
        parse_fixer_json(b'{"rates": {"USD": 1.07}}', fetched_at=NOW)


def test_fixer_lacks_a_currency():
    """A currency missing from the Fixer table raises RateUnavailable."""
    with pytest.raises(RateUnavailable, match="CHF"):
        fixer(mock_client(sample("fixer-latest.json"))).rate("USD", "CHF")


# --- transport failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception", "message"),
    [
        (httpx.ConnectTimeout, "timed out"),
        (httpx.ReadTimeout, "timed out"),
        (httpx.PoolTimeout, "timed out"),
        (httpx.ConnectError, "request failed"),
        (httpx.RemoteProtocolError, "request failed"),
    ],
)
@pytest.mark.parametrize("adapter", [ecb, oxr, fixer])
def test_network_errors_become_rate_unavailable(adapter, exception, message):
    """Timeouts and connection errors raise RateUnavailable chained to the httpx error."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise exception("boom", request=request)

    with pytest.raises(RateUnavailable, match=message) as info:
        adapter(mock_client(fail)).rates()
    assert isinstance(info.value.__cause__, exception)


def test_requests_carry_explicit_timeouts():
    """Every request is sent with the adapter's timeout, even on a borrowed client."""
    requests: list[httpx.Request] = []
    ecb(mock_client(sample("ecb-eurofxref-daily.xml"), requests=requests)).rates()
    assert requests[0].extensions["timeout"] == {
        "connect": 5.0,
        "read": 10.0,
        "write": 10.0,
        "pool": 10.0,
    }


def test_oversized_responses_are_refused():
    """A response far larger than any rate table raises RateUnavailable."""
    huge = b" " * (_http.MAX_RESPONSE_BYTES + 1)
    with pytest.raises(RateUnavailable, match="larger than"):
        ecb(mock_client(huge)).rates()


def test_owned_client_is_closed_and_borrowed_client_is_not():
    """close() closes a client the provider created and leaves a caller's client open."""
    with ECBRateProvider() as owned:
        pass
    assert owned._client.is_closed
    borrowed = mock_client(sample("ecb-eurofxref-daily.xml"))
    ecb(borrowed).close()
    assert not borrowed.is_closed


# --- secrets never leak -------------------------------------------------------------------


def _leak_scenarios() -> list[tuple[str, Callable[[], object]]]:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    return [
        ("oxr-ok", lambda: oxr(mock_client(sample("openexchangerates-latest.json"))).rates()),
        ("oxr-401", lambda: oxr(mock_client(sample("openexchangerates-error.json"), 401)).rates()),
        ("oxr-timeout", lambda: oxr(mock_client(timeout)).rates()),
        ("oxr-500", lambda: oxr(mock_client(b"oops", 500)).rates()),
        ("fixer-ok", lambda: fixer(mock_client(sample("fixer-latest.json"))).rates()),
        ("fixer-error", lambda: fixer(mock_client(sample("fixer-error-http200.json"))).rates()),
        ("fixer-timeout", lambda: fixer(mock_client(timeout)).rates()),
        ("fixer-500", lambda: fixer(mock_client(b"oops", 500)).rates()),
        ("fixer-bad-json", lambda: fixer(mock_client(b"{")).rates()),
    ]


@pytest.mark.parametrize(("name", "scenario"), _leak_scenarios())
def test_api_keys_never_appear_in_errors_reprs_or_logs(name, scenario, caplog):
    """The OXR app id and Fixer access key never show in exceptions, tracebacks or logs."""
    caplog.set_level(logging.DEBUG)
    error: BaseException | None = None
    try:
        scenario()
    except RateUnavailable as exc:
        error = exc
    texts = [caplog.text, *(record.getMessage() for record in caplog.records)]
    if error is not None:
        texts += [str(error), repr(error), repr(error.details)]
        texts += traceback.format_exception(error)
        cause = error.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
    assert not any(SECRET in text for text in texts), name
    if name.startswith("fixer") and "timeout" not in name:
        assert "access_key=***" in caplog.text  # httpx's request log line, redacted


def test_api_keys_never_appear_in_provider_reprs():
    """repr() of a keyed provider masks the key."""
    for provider in (oxr(mock_client(b"")), fixer(mock_client(b""))):
        assert SECRET not in repr(provider)
        assert "***" in repr(provider)


@pytest.mark.parametrize("key", ["", "   ", None, 123])
def test_keyed_providers_need_a_key(key):
    """An empty or non-string key is refused without echoing it."""
    with pytest.raises(InvalidInput):
        OpenExchangeRatesProvider(key)
    with pytest.raises(InvalidInput):
        FixerRateProvider(key)


def test_provider_text_containing_the_key_is_scrubbed():
    """If a provider echoes the key in an error body, it is replaced before raising."""
    error = {"code": 101, "type": "invalid_access_key", "info": f"key {SECRET} is invalid"}
    body = json.dumps({"success": False, "error": error}).encode()
    with pytest.raises(RateUnavailable) as info:
        fixer(mock_client(body)).rates()
    assert SECRET not in str(info.value)
    assert "key *** is invalid" in str(info.value)


# --- rate tables and the static provider -----------------------------------------------------


def test_static_provider_refuses_floats_and_bad_values():
    """Static rates must be positive Decimals (or ints/strings), never floats."""
    for bad in [0.9, Decimal(0), Decimal(-1), Decimal("NaN"), "abc", True]:
        with pytest.raises(InvalidInput):
            StaticRateProvider({"EUR": bad})
    with pytest.raises(UnknownCurrency):
        StaticRateProvider({"ZZZ": "1"})


def test_static_provider_times():
    """Without published_at the table is always fresh; with it, the time is fixed."""
    clock = FakeClock()
    fresh = StaticRateProvider({"EUR": "0.9"}, clock=clock)
    assert fresh.rate("USD", "EUR").published_at == NOW
    fixed = StaticRateProvider({"EUR": "0.9"}, published_at=NOW - timedelta(days=3), clock=clock)
    assert fixed.rate("USD", "EUR").published_at == NOW - timedelta(days=3)
    assert "EUR" in repr(fixed)


def test_rate_validates_its_fields():
    """A Rate needs known currencies, a positive Decimal, a valid source and aware times."""
    with pytest.raises(InvalidInput):
        Rate("USD", "EUR", Decimal("0.9"), "ecb", datetime(2024, 6, 28), NOW)
    with pytest.raises(InvalidInput):
        Rate("USD", "EUR", 0.9, "ecb", NOW, NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Rate("USD", "EUR", Decimal("0.9"), "Not A Source!", NOW, NOW)
    with pytest.raises(UnknownCurrency):
        Rate("USD", "ZZZ", Decimal("0.9"), "ecb", NOW, NOW)


def test_rate_convert_and_age():
    """Rate.convert multiplies exactly; Rate.age measures from published_at."""
    rate = Rate("USD", "JPY", Decimal("160.6165"), "static", NOW - timedelta(hours=2), NOW)
    assert rate.convert(Decimal("4.99")) == Decimal("801.476335")
    assert rate.age(NOW) == timedelta(hours=2)
    with pytest.raises(InvalidInput):
        rate.convert(4.99)  # type: ignore[arg-type]


def test_rate_table_base_must_be_one():
    """A table whose base is not 1 against itself is inconsistent."""
    with pytest.raises(InvalidInput):
        RateTable("EUR", {"EUR": Decimal(2)}, "static", NOW, NOW)
    table = RateTable("EUR", {"USD": Decimal("1.07")}, "static", NOW, NOW)
    assert table.currencies == {"EUR", "USD"}
    with pytest.raises(TypeError):
        table.rates["USD"] = Decimal(1)  # type: ignore[index]


@given(
    first=rates,
    second=rates,
    pair=st.permutations(["EUR", "JPY", "GBP"]),
)
def test_cross_rates_are_consistent(first, second, pair):
    """Inverse and chained cross rates agree with each other to 18 significant digits."""
    table = StaticRateProvider({"EUR": first, "JPY": second, "GBP": "0.790636"}).rates()
    a, b, c = pair
    forward, backward = table.rate(a, b).value, table.rate(b, a).value
    assert abs(forward * backward - 1) < Decimal("1e-18")
    chained = table.rate(a, b).value * table.rate(b, c).value
    assert abs(chained / table.rate(a, c).value - 1) < Decimal("1e-18")


# --- caching ---------------------------------------------------------------------------------


class ScriptedProvider:
    """A table provider that returns (or raises) the scripted items in turn, counting calls."""

    source = "scripted"
    default_ttl = timedelta(hours=1)
    default_max_age = timedelta(days=2)

    def __init__(self, *items: RateTable | RateError) -> None:
        self.items = list(items)
        self.calls = 0

    def rates(self) -> RateTable:
        self.calls += 1
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if isinstance(item, RateError):
            raise item
        return item

    def rate(self, base: str, quote: str) -> Rate:
        return self.rates().rate(base, quote)


def table(published_at: datetime = NOW, eur: str = "0.9") -> RateTable:
    return RateTable("USD", {"EUR": Decimal(eur)}, "scripted", published_at, published_at)


def test_cache_reuses_the_table_within_ttl():
    """Within the TTL the provider is asked once; after it, again."""
    clock = FakeClock()
    provider = ScriptedProvider(table(NOW, "0.9"), table(NOW, "0.91"))
    cached = CachedRateProvider(provider, ttl=timedelta(minutes=30), clock=clock)
    assert cached.rate("USD", "EUR").value == Decimal("0.9")
    clock.advance(minutes=29)
    assert cached.rate("USD", "EUR").value == Decimal("0.9")
    assert provider.calls == 1
    clock.advance(minutes=1)
    assert cached.rate("USD", "EUR").value == Decimal("0.91")
    assert provider.calls == 2


def test_cache_defaults_come_from_the_provider():
    """TTL and staleness limit default to the provider's declared intervals."""
    assert CachedRateProvider(ecb(mock_client(b""))).ttl == timedelta(hours=1)
    assert CachedRateProvider(ecb(mock_client(b""))).max_age == timedelta(days=5, hours=12)
    assert CachedRateProvider(oxr(mock_client(b""))).ttl == timedelta(hours=1)
    assert CachedRateProvider(fixer(mock_client(b""))).ttl == timedelta(hours=8)
    assert CachedRateProvider(ScriptedProvider(table())).max_age == timedelta(days=2)


def test_cache_refuses_stale_rates():
    """A table published longer ago than max_age raises RateStale instead of pricing."""
    provider = ScriptedProvider(table(NOW - timedelta(days=3)))
    cached = CachedRateProvider(provider, max_age=timedelta(days=2), clock=FakeClock())
    with pytest.raises(RateStale) as info:
        cached.rate("USD", "EUR")
    assert info.value.details["source"] == "scripted"


def test_cached_table_goes_stale_as_time_passes():
    """Staleness is checked at every call, even while the TTL keeps the table cached."""
    clock = FakeClock()
    cached = CachedRateProvider(
        ScriptedProvider(table(NOW)), ttl=timedelta(days=30), max_age=timedelta(days=1), clock=clock
    )
    cached.rate("USD", "EUR")
    clock.advance(days=1, seconds=1)
    with pytest.raises(RateStale):
        cached.rate("USD", "EUR")


def test_cache_serves_the_old_table_when_a_refresh_fails(caplog):
    """A failed refresh keeps serving a table that is not yet stale, logs, and backs off."""
    clock = FakeClock()
    provider = ScriptedProvider(table(NOW), RateUnavailable("down"), table(NOW, "0.95"))
    cached = CachedRateProvider(
        provider, ttl=timedelta(hours=1), retry_after=timedelta(minutes=5), clock=clock
    )
    cached.rate("USD", "EUR")
    clock.advance(hours=1)
    with caplog.at_level(logging.WARNING, logger="spaktok_ledger.fx"):
        assert cached.rate("USD", "EUR").value == Decimal("0.9")
    assert "refreshing scripted rates failed" in caplog.text
    clock.advance(minutes=4)
    cached.rate("USD", "EUR")
    assert provider.calls == 2  # backing off
    clock.advance(minutes=1)
    assert cached.rate("USD", "EUR").value == Decimal("0.95")
    assert provider.calls == 3


def test_cache_without_a_table_propagates_the_failure():
    """The first fetch failing raises the provider's RateUnavailable."""
    cached = CachedRateProvider(ScriptedProvider(RateUnavailable("down")), clock=FakeClock())
    with pytest.raises(RateUnavailable, match="down"):
        cached.rates()


def test_stale_table_with_failing_refresh_raises_stale_from_the_failure():
    """When the cached table is stale and the refresh fails, RateStale chains the failure."""
    clock = FakeClock()
    provider = ScriptedProvider(table(NOW), RateUnavailable("down"))
    cached = CachedRateProvider(provider, max_age=timedelta(days=1), clock=clock)
    cached.rates()
    clock.advance(days=2)
    with pytest.raises(RateStale) as info:
        cached.rates()
    assert isinstance(info.value.__cause__, RateUnavailable)


def test_cache_invalidate_forces_a_fetch():
    """invalidate() makes the next call fetch."""
    provider = ScriptedProvider(table())
    cached = CachedRateProvider(provider, clock=FakeClock())
    cached.rates()
    cached.invalidate()
    cached.rates()
    assert provider.calls == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": timedelta(0)}, {"max_age": timedelta(seconds=-1)}, {"retry_after": 60}],
)
def test_cache_validates_its_intervals(kwargs):
    """TTL, max_age and retry_after must be positive timedeltas."""
    with pytest.raises(InvalidInput):
        CachedRateProvider(ScriptedProvider(table()), **kwargs)


def test_cache_refuses_a_naive_clock():
    """A clock returning naive datetimes is refused."""
    cached = CachedRateProvider(ScriptedProvider(table()), clock=lambda: datetime(2024, 6, 28))
    with pytest.raises(InvalidInput):
        cached.rates()


def test_cached_ecb_adapter_fetches_once_per_ttl():
    """Wrapping the ECB adapter: one HTTP request serves many pairs until the TTL passes."""
    requests: list[httpx.Request] = []
    clock = FakeClock()
    provider = ECBRateProvider(
        client=mock_client(sample("ecb-eurofxref-daily.xml"), requests=requests), clock=clock
    )
    cached = CachedRateProvider(provider, clock=clock)
    for quote in ["JPY", "GBP", "BRL", "INR"]:
        cached.rate("USD", quote)
    assert len(requests) == 1
    clock.advance(hours=1)
    cached.rate("USD", "JPY")
    assert len(requests) == 2


# --- fallback --------------------------------------------------------------------------------


def test_fallback_uses_the_next_provider(caplog):
    """When the first provider fails, the second answers and the failure is logged."""
    down = ScriptedProvider(RateUnavailable("scripted: down"))
    chain = FallbackRateProvider([down, StaticRateProvider({"EUR": "0.9"})])
    with caplog.at_level(logging.WARNING, logger="spaktok_ledger.fx"):
        assert chain.rate("USD", "EUR").source == "static"
    assert "scripted failed" in caplog.text


def test_fallback_all_unavailable():
    """When every provider fails, RateUnavailable names each failure."""
    chain = FallbackRateProvider(
        [ScriptedProvider(RateUnavailable("first down")), StaticRateProvider({})]
    )
    with pytest.raises(RateUnavailable) as info:
        chain.rate("USD", "EUR")
    assert "first down" in str(info.value)
    assert "static publishes no EUR rate" in str(info.value)
    assert info.value.details["providers"] == ["scripted", "static"]


def test_fallback_all_stale():
    """When every provider is stale, the chain raises RateStale."""
    stale = CachedRateProvider(ScriptedProvider(table(NOW - timedelta(days=9))), clock=FakeClock())
    with pytest.raises(RateStale):
        FallbackRateProvider([stale, stale]).rate("USD", "EUR")


def test_fallback_skips_a_stale_provider():
    """A stale first provider falls through to a fresh one."""
    stale = CachedRateProvider(ScriptedProvider(table(NOW - timedelta(days=9))), clock=FakeClock())
    fresh = oxr(mock_client(sample("openexchangerates-latest.json")))
    assert FallbackRateProvider([stale, fresh]).rate("USD", "EUR").source == "openexchangerates"


def test_fallback_does_not_retry_misuse():
    """An unknown currency code is raised at once; later providers are not asked."""
    second = ScriptedProvider(table())
    with pytest.raises(UnknownCurrency):
        FallbackRateProvider([StaticRateProvider({}), second]).rate("USD", "ZZZ")
    assert second.calls == 0


def test_fallback_needs_providers():
    """An empty chain is refused."""
    with pytest.raises(InvalidInput):
        FallbackRateProvider([])


def test_fallback_chain_of_http_adapters():
    """ECB down (timeout) falls back to Fixer's cross rate."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    chain = FallbackRateProvider(
        [ecb(mock_client(timeout)), fixer(mock_client(sample("fixer-latest.json")))]
    )
    rate = chain.rate("USD", "JPY")
    assert (rate.source, rate.via) == ("fixer", "EUR")


# --- packaging ----------------------------------------------------------------------------


def test_http_adapters_are_loaded_lazily():
    """The HTTP adapters resolve through the package; unknown names raise AttributeError."""
    assert fx.ECBRateProvider is _http.ECBRateProvider
    with pytest.raises(AttributeError):
        fx.NoSuchProvider  # noqa: B018


def test_invalid_url_becomes_rate_unavailable():
    """A malformed provider URL fails like any other request, as RateUnavailable."""
    provider = ECBRateProvider(client=mock_client(b""), url="http://[::1", clock=fixed_clock())
    with pytest.raises(RateUnavailable, match="request failed"):
        provider.rates()
