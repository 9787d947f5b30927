"""FakeStripe driven by the real ``stripe`` SDK: API shapes, idempotency, simulator, faults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

import pytest

stripe = pytest.importorskip("stripe")

import spaktok_ledger.testing  # noqa: E402 - after importorskip
from spaktok_ledger.testing import FakeClock, FakeStripe, stripe_client  # noqa: E402

FIXTURES = json.loads(
    resources.files("spaktok_ledger.testing").joinpath("stripe_fixtures.json").read_text("utf-8")
)["resources"]


@pytest.fixture
def fake():
    with FakeStripe() as server:
        yield server


@pytest.fixture
def client(fake):
    return stripe_client(fake)


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """The SDK sleeps at least 0.5 s between retries; tests do not need to."""
    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, n: 0.0)


def session_params(**overrides):
    params = {
        "mode": "payment",
        "success_url": "https://example.com/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": "user-42",
        "metadata": {"user_id": "42", "quote_id": "q_1"},
        "payment_intent_data": {"metadata": {"purchase_id": "p_1", "user_id": "42"}},
        "payment_method_types": ["card"],
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "EUR",
                    "unit_amount": 499,
                    "product_data": {"name": "500 coins"},
                },
            }
        ],
    }
    params.update(overrides)
    return params


def paid_charge(fake, client, **complete):
    session = client.v1.checkout.sessions.create(params=session_params())
    fake.complete_checkout(session.id, exchange_rate=Decimal("1.0843"), **complete)
    session = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge"]}
    )
    return session.payment_intent.latest_charge


def connected_account(fake, client, *, onboarded=True, funds=0):
    """A US Express account; onboarded ones come with a funded platform balance, and
    ``funds`` US cents transferred to the account itself."""
    account = client.v1.accounts.create(
        params={
            "type": "express",
            "country": "US",
            "capabilities": {"transfers": {"requested": True}},
        }
    )
    if onboarded:
        fake.top_up(1_000_000)
        fake.onboard_account(account.id)
    if funds:
        client.v1.transfers.create(
            params={"amount": funds, "currency": "usd", "destination": account.id}
        )
    return account.id


# --- package surface ----------------------------------------------------------


def test_exported_names():
    """``spaktok_ledger.testing`` exports exactly the curated, sorted public names."""
    expected = [
        "FakeClock",
        "FakeStripe",
        "RecordedRequest",
        "event_payload",
        "sign_payload",
        "signed_event",
        "stripe_client",
    ]
    assert spaktok_ledger.testing.__all__ == expected
    for name in expected:
        assert hasattr(spaktok_ledger.testing, name)


def test_importable_and_servable_without_stripe():
    """Without the ``stripe`` package the module imports and the server answers plain HTTP."""
    script = """
import sys, json, urllib.request
sys.modules["stripe"] = None
from spaktok_ledger.testing import FakeStripe, stripe_client
with FakeStripe() as fake:
    req = urllib.request.Request(fake.url + "/v1/accounts", data=b"type=express",
        headers={"Authorization": "Bearer sk_test_x"})
    print(json.load(urllib.request.urlopen(req))["object"])
try:
    stripe_client("http://127.0.0.1:1")
except ImportError:
    print("no stripe")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.split() == ["account", "no", "stripe"]


def test_fixture_license_ships_with_the_fixtures():
    """Stripe's MIT notice sits next to the fixture file it covers."""
    notice = resources.files("spaktok_ledger.testing").joinpath("STRIPE_FIXTURES_LICENSE")
    assert "Stripe, Inc." in notice.read_text("utf-8")
    assert "MIT" in notice.read_text("utf-8")


def test_url_needs_a_running_server():
    """``url`` before ``start()`` is an error, and ``stop()`` twice is harmless."""
    fake = FakeStripe()
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    assert fake.url.startswith("http://127.0.0.1:")
    fake.stop()
    fake.stop()


# --- checkout -----------------------------------------------------------------


def test_create_checkout_session(fake, client):
    """A created session is open and unpaid, with Stripe's shape and the caller's fields."""
    session = client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "checkout:q_1"}
    )
    assert session.id.startswith("cs_test_")
    assert session.url.endswith(session.id)
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert (session.amount_total, session.currency) == (499, "eur")
    assert session.client_reference_id == "user-42"
    assert session.metadata.to_dict() == {"user_id": "42", "quote_id": "q_1"}
    assert session.payment_intent is None
    assert set(session.to_dict()) == set(FIXTURES["checkout.session"])
    sent = fake.requests[-1]
    assert (sent.method, sent.path, sent.idempotency_key) == (
        "POST",
        "/v1/checkout/sessions",
        "checkout:q_1",
    )
    assert sent.header("idempotency-key") == "checkout:q_1"
    assert sent.params["line_items"][0]["price_data"]["currency"] == "EUR"
    assert sent.params["payment_intent_data"]["metadata"] == {"purchase_id": "p_1", "user_id": "42"}
    assert sent.params["payment_method_types"] == ["card"]


def test_line_items_are_listed(client):
    """The session's line items come back with their amounts and description."""
    session = client.v1.checkout.sessions.create(params=session_params())
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.description, i.amount_total, i.quantity) for i in items.data] == [
        ("500 coins", 499, 1)
    ]


def test_idempotent_replay(fake, client):
    """The same key and params return the first response, flagged as replayed, creating nothing."""
    first = client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "k-1"}
    )
    second = client.v1.checkout.sessions.create(
        params=session_params(), options={"idempotency_key": "k-1"}
    )
    assert second.id == first.id
    assert fake.requests[-1].replayed
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(client.v1.checkout.sessions.list().data) == 1


def test_idempotency_conflict(client):
    """The same key with different params is Stripe's ``idempotency_error``."""
    client.v1.checkout.sessions.create(params=session_params(), options={"idempotency_key": "k-2"})
    with pytest.raises(stripe.IdempotencyError) as info:
        client.v1.checkout.sessions.create(
            params=session_params(client_reference_id="someone-else"),
            options={"idempotency_key": "k-2"},
        )
    assert info.value.http_status == 400


def test_idempotency_keys_are_scoped_per_account(fake, client):
    """One key on two connected accounts makes two payouts, as on Stripe."""
    first = connected_account(fake, client, funds=1000)
    second = connected_account(fake, client, funds=1000)
    params = {"amount": 1000, "currency": "usd"}
    one = client.v1.payouts.create(
        params=params, options={"stripe_account": first, "idempotency_key": "po-1"}
    )
    two = client.v1.payouts.create(
        params=params, options={"stripe_account": second, "idempotency_key": "po-1"}
    )
    assert one.id != two.id


def test_retrieve_with_expand(fake, client):
    """``expand`` fills in the PaymentIntent, its charge and the balance transaction."""
    session = client.v1.checkout.sessions.create(params=session_params())
    fake.complete_checkout(session.id, exchange_rate=Decimal("1.0843"), fee_minor=46)
    plain = client.v1.checkout.sessions.retrieve(session.id)
    assert isinstance(plain.payment_intent, str)
    expanded = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge.balance_transaction"]}
    )
    intent = expanded.payment_intent
    txn = intent.latest_charge.balance_transaction
    assert intent.id == plain.payment_intent
    assert intent.metadata.to_dict() == {"purchase_id": "p_1", "user_id": "42"}
    assert (txn.amount, txn.currency, txn.fee, txn.net) == (541, "usd", 46, 495)
    assert Decimal(str(txn.exchange_rate)) == Decimal("1.0843")
    charge = client.v1.charges.retrieve(
        intent.latest_charge.id, params={"expand": ["balance_transaction"]}
    )
    assert charge.balance_transaction.id == txn.id
    assert client.v1.balance_transactions.retrieve(txn.id).source == charge.id
    assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_expand_of_a_plain_field_is_refused(client):
    """Expanding something that is not an object id is a 400, as on Stripe."""
    session = client.v1.checkout.sessions.create(params=session_params())
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["currency"]})


def test_expansions_go_four_levels_deep_counting_a_lists_data(fake, client):
    """Stripe allows four levels, and in a list ``data`` is one of them: "when listing
    charges, data.payment_intent.customer.default_source is the deepest allowed"
    (https://docs.stripe.com/expand)."""
    session = client.v1.checkout.sessions.create(params=session_params())
    fake.complete_checkout(session.id, exchange_rate=Decimal("1.0843"), fee_minor=46)
    four = "data.payment_intent.latest_charge.balance_transaction"
    listed = client.v1.checkout.sessions.list(params={"expand": [four]})
    txn = listed.data[0].payment_intent.latest_charge.balance_transaction
    assert (txn.object, txn.fee) == ("balance_transaction", 46)
    with pytest.raises(stripe.InvalidRequestError, match="more than 4 levels"):
        client.v1.checkout.sessions.list(params={"expand": [four + ".source"]})


def test_two_expansions_through_one_charge_both_apply(fake, client):
    """Expanding a charge's balance transaction and its refunds in one request gives
    both, whichever path comes first (the refunds list only when expanded:
    https://docs.stripe.com/upgrades#2022-11-15)."""
    session = client.v1.checkout.sessions.create(params=session_params())
    fake.complete_checkout(session.id, exchange_rate=Decimal("1.0843"), fee_minor=46)
    paths = [
        "payment_intent.latest_charge.balance_transaction",
        "payment_intent.latest_charge.refunds",
    ]
    for expand in (paths, paths[::-1]):
        got = client.v1.checkout.sessions.retrieve(session.id, params={"expand": expand})
        charge = got.payment_intent.latest_charge
        assert charge.balance_transaction.object == "balance_transaction"
        assert (charge.refunds.object, charge.refunds.data, charge.refunds.has_more) == (
            "list",
            [],
            False,
        )
    plain = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge"]}
    )
    assert "refunds" not in plain.payment_intent.latest_charge


def test_complete_checkout_event(fake, client):
    """``checkout.session.completed`` has Stripe's event shape and the paid session."""
    session = client.v1.checkout.sessions.create(params=session_params())
    event = fake.complete_checkout(
        session.id, exchange_rate=Decimal("1.0843"), risk_level="elevated", risk_score=70
    )
    assert set(FIXTURES["event"]) <= set(event)
    assert event["id"].startswith("evt_")
    assert (event["object"], event["type"], event["livemode"]) == (
        "event",
        "checkout.session.completed",
        False,
    )
    assert event["api_version"] == stripe.api_version
    assert event["pending_webhooks"] == 1
    assert event["request"] == {"id": None, "idempotency_key": None}
    assert "account" not in event
    completed = event["data"]["object"]
    assert set(completed) == set(FIXTURES["checkout.session"])
    assert (completed["status"], completed["payment_status"]) == ("complete", "paid")
    assert completed["payment_intent"].startswith("pi_")
    assert event["data"]["previous_attributes"]["status"] == "open"
    assert fake.events[-1] == event
    intent = fake.get_object(completed["payment_intent"])
    charge = fake.get_object(intent["latest_charge"])
    assert set(charge) == set(FIXTURES["charge"])
    assert (charge["outcome"]["risk_level"], charge["outcome"]["risk_score"]) == ("elevated", 70)
    assert charge["metadata"] == {"purchase_id": "p_1", "user_id": "42"}
    assert charge["payment_intent"] == intent["id"]
    assert (charge["amount"], charge["currency"], charge["paid"]) == (499, "eur", True)
    txn = fake.get_object(charge["balance_transaction"])
    assert set(txn) == set(FIXTURES["balance_transaction"])
    assert (txn["amount"], txn["fee"], txn["net"]) == (541, 46, 495)


def test_settlement_in_the_same_currency(fake, client):
    """Settling in the presentment currency needs no rate; the default fee is 2.9% + 30."""
    session = client.v1.checkout.sessions.create(
        params=session_params(
            line_items=[
                {
                    "quantity": 2,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 1000,
                        "product_data": {"name": "1000 coins"},
                    },
                }
            ]
        )
    )
    event = fake.complete_checkout(session.id)
    charge = fake.get_object(
        fake.get_object(event["data"]["object"]["payment_intent"])["latest_charge"]
    )
    txn = fake.get_object(charge["balance_transaction"])
    assert (txn["amount"], txn["fee"], txn["exchange_rate"]) == (2000, 88, None)
    with pytest.raises(ValueError, match="not open"):
        fake.complete_checkout(session.id)


def test_zero_decimal_conversion(fake, client):
    """JPY (zero-decimal) converts to USD cents with the exponent difference."""
    session = client.v1.checkout.sessions.create(
        params=session_params(
            line_items=[
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "jpy",
                        "unit_amount": 800,
                        "product_data": {"name": "coins"},
                    },
                }
            ]
        )
    )
    event = fake.complete_checkout(session.id, exchange_rate=Decimal("0.0066"))
    intent = fake.get_object(event["data"]["object"]["payment_intent"])
    txn = fake.get_object(fake.get_object(intent["latest_charge"])["balance_transaction"])
    assert txn["amount"] == 528  # 800 JPY * 0.0066 = 5.28 USD


def test_complete_checkout_needs_a_rate_across_currencies(client, fake):
    """Settling EUR in USD without a rate (or with a float) is a simulator misuse."""
    session = client.v1.checkout.sessions.create(params=session_params())
    with pytest.raises(ValueError, match="exchange_rate"):
        fake.complete_checkout(session.id)
    with pytest.raises(TypeError):
        fake.complete_checkout(session.id, exchange_rate=1.08)  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        fake.complete_checkout("cs_test_missing")


def test_delayed_payment_succeeds(fake, client):
    """An async method completes unpaid, then ``async_payment_succeeded`` settles it."""
    session = client.v1.checkout.sessions.create(params=session_params())
    completed = fake.complete_checkout(session.id, paid=False, exchange_rate=Decimal("1.1"))
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    intent = fake.get_object(completed["data"]["object"]["payment_intent"])
    assert intent["status"] == "processing"
    assert fake.get_object(intent["latest_charge"])["balance_transaction"] is None
    succeeded = fake.async_payment_succeeded(session.id)
    assert succeeded["type"] == "checkout.session.async_payment_succeeded"
    assert succeeded["data"]["object"]["payment_status"] == "paid"
    charge = fake.get_object(intent["latest_charge"])
    assert charge["status"] == "succeeded"
    assert fake.get_object(charge["balance_transaction"])["amount"] == 549
    with pytest.raises(ValueError):
        fake.async_payment_failed(session.id)


def test_delayed_payment_fails(fake, client):
    """``async_payment_failed`` leaves the session unpaid and the charge failed."""
    session = client.v1.checkout.sessions.create(params=session_params())
    fake.complete_checkout(session.id, paid=False, exchange_rate=Decimal("1.1"))
    failed = fake.async_payment_failed(session.id)
    assert failed["type"] == "checkout.session.async_payment_failed"
    assert failed["data"]["object"]["payment_status"] == "unpaid"
    intent = fake.get_object(failed["data"]["object"]["payment_intent"])
    assert fake.get_object(intent["latest_charge"])["status"] == "failed"


def test_expire_checkout(fake, client):
    """Expiring via the API or the simulator records ``checkout.session.expired``."""
    by_api = client.v1.checkout.sessions.create(params=session_params())
    expired = client.v1.checkout.sessions.expire(by_api.id, options={"idempotency_key": "exp-1"})
    assert expired.status == "expired"
    assert fake.events[-1]["type"] == "checkout.session.expired"
    assert fake.events[-1]["request"]["idempotency_key"] == "exp-1"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(by_api.id)
    by_timeout = client.v1.checkout.sessions.create(params=session_params())
    event = fake.expire_checkout(by_timeout.id)
    assert (event["type"], event["data"]["object"]["status"]) == (
        "checkout.session.expired",
        "expired",
    )
    with pytest.raises(ValueError, match="not open"):
        fake.complete_checkout(by_timeout.id, exchange_rate=Decimal("1.1"))


def test_list_sessions_by_payment_intent(fake, client):
    """Sessions can be found by their PaymentIntent, as a webhook handler might."""
    session = client.v1.checkout.sessions.create(params=session_params())
    client.v1.checkout.sessions.create(params=session_params())
    event = fake.complete_checkout(session.id, exchange_rate=Decimal("1.1"))
    found = client.v1.checkout.sessions.list(
        params={"payment_intent": event["data"]["object"]["payment_intent"]}
    )
    assert [s.id for s in found.data] == [session.id]


# --- request validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code", "param"),
    [
        ({"colour": "blue"}, "parameter_unknown", "colour"),
        ({"line_items": None}, "parameter_missing", "line_items"),
        ({"mode": None}, "parameter_missing", "mode"),
        (
            {"line_items": [{"quantity": "one", "price_data": {"currency": "usd"}}]},
            "parameter_invalid_integer",
            "line_items[0][quantity]",
        ),
        (
            {"payment_intent_data": {"metadata": {"x" * 41: "v"}}},
            None,
            "payment_intent_data[metadata][" + "x" * 41 + "]",
        ),
    ],
)
def test_bad_params_are_invalid_requests(client, overrides, code, param):
    """Unknown, missing and malformed params are 400s with Stripe's code and param."""
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(params=session_params(**overrides))
    assert info.value.http_status == 400
    assert info.value.code == code
    assert info.value.param == param


def test_three_decimal_amounts_must_end_in_zero(client):
    """A BHD amount whose last digit is not 0 is refused, per Stripe's currency rules."""
    items = [
        {
            "quantity": 1,
            "price_data": {"currency": "bhd", "unit_amount": 1005, "product_data": {"name": "c"}},
        }
    ]
    with pytest.raises(stripe.InvalidRequestError, match="three-decimal"):
        client.v1.checkout.sessions.create(params=session_params(line_items=items))
    items[0]["price_data"]["unit_amount"] = 1000
    assert (
        client.v1.checkout.sessions.create(params=session_params(line_items=items)).amount_total
        == 1000
    )


def test_unknown_ids_are_resource_missing(client):
    """Unknown ids are 404 ``resource_missing`` naming the object type."""
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.charges.retrieve("ch_missing")
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    assert "No such charge: 'ch_missing'" in str(info.value)


def test_unknown_route_is_a_404(fake):
    """An endpoint the fake does not speak is Stripe's 'Unrecognized request URL'."""
    request = urllib.request.Request(
        fake.url + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 404
    assert "Unrecognized request URL" in json.load(info.value)["error"]["message"]


@pytest.mark.parametrize("api_key", ["sk_live_123456789", "pk_test_123456789"])
def test_only_test_secret_keys_are_accepted(fake, api_key):
    """Live keys and publishable keys are refused with 401."""
    with pytest.raises(stripe.AuthenticationError):
        stripe_client(fake, api_key).v1.accounts.create(params={"type": "express"})


def test_configured_api_keys(client):
    """With ``api_keys`` given only those keys are accepted."""
    with FakeStripe(api_keys=["sk_test_right"]) as fake:
        assert stripe_client(fake, "sk_test_right").v1.accounts.create(params={"type": "express"})
        with pytest.raises(stripe.AuthenticationError):
            stripe_client(fake, "sk_test_wrong").v1.accounts.create(params={"type": "express"})


# --- refunds and disputes -----------------------------------------------------


def test_refunds(fake, client):
    """Partial then full refunds update the charge; over-refunds are refused."""
    charge = paid_charge(fake, client)
    partial = client.v1.refunds.create(
        params={
            "payment_intent": charge.payment_intent,
            "amount": 199,
            "metadata": {"why": "test"},
        },
        options={"idempotency_key": "refund:1"},
    )
    assert (partial.amount, partial.charge, partial.status) == (199, charge.id, "succeeded")
    assert set(FIXTURES["refund"]) <= set(partial.to_dict())
    event, created = fake.events[-2:]
    assert (event["type"], created["type"]) == ("charge.refunded", "refund.created")
    assert created["data"]["object"]["id"] == partial.id
    assert "refunds" not in event["data"]["object"]  # not included since 2022-11-15
    assert event["request"]["idempotency_key"] == "refund:1"
    assert event["data"]["object"]["amount_refunded"] == 199
    assert event["data"]["previous_attributes"]["amount_refunded"] == 0
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 301})
    assert info.value.code == "amount_too_large"
    rest = client.v1.refunds.create(params={"charge": charge.id})
    assert rest.amount == 300
    refunded = client.v1.charges.retrieve(charge.id)
    assert (refunded.amount_refunded, refunded.refunded) == (499, True)
    assert "refunds" not in refunded
    expanded = client.v1.charges.retrieve(charge.id, params={"expand": ["refunds"]})
    assert [r.id for r in expanded.refunds.data] == [rest.id, partial.id]
    txn = client.v1.balance_transactions.retrieve(partial.balance_transaction)
    assert (txn.type, txn.amount, txn.currency) == ("refund", -216, "usd")
    assert client.v1.refunds.retrieve(partial.id).metadata.to_dict() == {"why": "test"}
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge.id})
    assert info.value.code == "charge_already_refunded"


def test_refund_simulator(fake, client):
    """A Dashboard refund returns ``charge.refunded`` with the refunds list."""
    charge = paid_charge(fake, client)
    event = fake.refund(charge.id, amount_minor=100)
    refunded = event["data"]["object"]
    assert (event["type"], refunded["amount_refunded"], refunded["refunded"]) == (
        "charge.refunded",
        100,
        False,
    )
    assert [r.amount for r in client.v1.refunds.list(params={"charge": charge.id}).data] == [100]
    with pytest.raises(ValueError, match="greater than"):
        fake.refund(charge.id, amount_minor=1000)


def test_dispute_lifecycle(fake, client):
    """created, funds_withdrawn (amount + 1500 fee), funds_reinstated and closed as won."""
    charge = paid_charge(fake, client)
    created = fake.dispute(charge.id, reason="fraudulent")
    dispute = created["data"]["object"]
    assert created["type"] == "charge.dispute.created"
    assert set(dispute) == set(FIXTURES["dispute"])
    assert (dispute["amount"], dispute["charge"], dispute["status"]) == (
        499,
        charge.id,
        "needs_response",
    )
    assert dispute["payment_intent"] == charge.payment_intent
    withdrawn = fake.dispute_funds_withdrawn(dispute["id"])
    (debit,) = withdrawn["data"]["object"]["balance_transactions"]
    assert (debit["amount"], debit["fee"], debit["net"], debit["currency"]) == (
        -541,
        1500,
        -2041,
        "usd",
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge.id})
    assert info.value.code == "charge_disputed"
    reinstated = fake.dispute_funds_reinstated(dispute["id"])
    assert [t["amount"] for t in reinstated["data"]["object"]["balance_transactions"]] == [
        -541,
        541,
    ]
    closed = fake.close_dispute(dispute["id"], status="won")
    assert (closed["type"], closed["data"]["object"]["status"]) == ("charge.dispute.closed", "won")
    assert client.v1.disputes.retrieve(dispute["id"]).status == "won"
    with pytest.raises(ValueError, match="already closed"):
        fake.close_dispute(dispute["id"], status="lost")
    with pytest.raises(ValueError, match="once"):
        fake.dispute_funds_withdrawn(dispute["id"])


# --- Connect ------------------------------------------------------------------


def test_accounts_and_account_links(fake, client):
    """Express accounts start restricted; links, updates and onboarding behave like Stripe."""
    params = {
        "type": "express",
        "country": "DE",
        "email": "s@example.com",
        "metadata": {"streamer_id": "7"},
        "capabilities": {"transfers": {"requested": True}},
    }
    with pytest.raises(stripe.InvalidRequestError, match="recipient") as info:
        client.v1.accounts.create(params=params)  # a US platform, a German account
    assert info.value.param == "tos_acceptance[service_agreement]"
    account = client.v1.accounts.create(
        params={**params, "tos_acceptance": {"service_agreement": "recipient"}}
    )
    assert account.tos_acceptance.service_agreement == "recipient"
    assert account.id.startswith("acct_")
    assert (account.type, account.country, account.default_currency) == ("express", "DE", "eur")
    assert (account.charges_enabled, account.payouts_enabled, account.details_submitted) == (
        False,
        False,
        False,
    )
    assert account.requirements.disabled_reason == "requirements.past_due"
    assert "external_account" in account.requirements.currently_due
    assert set(account.to_dict()) == set(FIXTURES["account"])
    link = client.v1.account_links.create(
        params={
            "account": account.id,
            "type": "account_onboarding",
            "refresh_url": "https://example.com/refresh",
            "return_url": "https://example.com/return",
        }
    )
    assert link.object == "account_link"
    assert link.url.startswith("https://connect.stripe.com/setup/")
    assert link.expires_at > link.created
    updated = client.v1.accounts.update(account.id, params={"metadata": {"tier": "gold"}})
    assert updated.metadata.to_dict() == {"streamer_id": "7", "tier": "gold"}
    assert fake.events[-1]["type"] == "account.updated"
    event = fake.update_account(
        account.id, details_submitted=True, currently_due=["individual.verification.document"]
    )
    assert event["account"] == account.id
    assert event["data"]["previous_attributes"]["details_submitted"] is False
    assert event["data"]["object"]["requirements"]["currently_due"] == [
        "individual.verification.document"
    ]
    onboarded = fake.onboard_account(account.id)["data"]["object"]
    assert onboarded["payouts_enabled"]
    assert onboarded["charges_enabled"]
    assert onboarded["requirements"]["disabled_reason"] is None
    assert client.v1.accounts.retrieve(account.id).payouts_enabled is True


def test_unknown_account_is_refused(client):
    """An unknown account id (path or ``Stripe-Account``) is Stripe's 403 ``account_invalid``."""
    with pytest.raises(stripe.PermissionError):
        client.v1.accounts.retrieve("acct_missing")
    with pytest.raises(stripe.PermissionError):
        client.v1.payouts.list(options={"stripe_account": "acct_missing"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.account_links.create(
            params={
                "account": "acct_missing",
                "type": "account_onboarding",
                "refresh_url": "https://example.com/r",
                "return_url": "https://example.com/r",
            }
        )


def test_transfers(fake, client):
    """Transfers need an onboarded destination, list by ``transfer_group``, and reverse."""
    restricted = connected_account(fake, client, onboarded=False)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.transfers.create(
            params={"amount": 100, "currency": "usd", "destination": restricted}
        )
    assert info.value.code == "insufficient_capabilities_for_transfer"
    destination = connected_account(fake, client)
    made = [
        client.v1.transfers.create(
            params={
                "amount": amount,
                "currency": "usd",
                "destination": destination,
                "transfer_group": group,
                "metadata": {"payout_id": str(amount)},
            },
            options={"idempotency_key": f"payout:{amount}"},
        )
        for amount, group in [(1000, "payout:g1"), (2000, "payout:g1"), (3000, "payout:g2")]
    ]
    assert made[0].destination == destination
    assert set(made[0].to_dict()) == set(FIXTURES["transfer"])
    assert made[0].metadata.to_dict() == {"payout_id": "1000"}
    listed = client.v1.transfers.list(params={"transfer_group": "payout:g1"})
    assert [t.id for t in listed.data] == [made[1].id, made[0].id]
    assert listed.url == "/v1/transfers"
    assert fake.events[-1]["type"] == "transfer.created"
    reversal = client.v1.transfers.reversals.create(made[0].id, params={"amount": 400})
    assert (reversal.amount, reversal.transfer) == (400, made[0].id)
    assert set(reversal.to_dict()) == set(FIXTURES["transfer_reversal"])
    transfer = client.v1.transfers.retrieve(made[0].id)
    assert (transfer.amount_reversed, transfer.reversed) == (400, False)
    assert fake.events[-1]["type"] == "transfer.reversed"
    event = fake.reverse_transfer(made[0].id)
    assert event["data"]["object"]["reversed"] is True
    assert event["data"]["object"]["amount_reversed"] == 1000
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.reversals.create(made[0].id)


def test_list_pagination(fake, client):
    """Lists page newest first with ``limit``/``starting_after``; auto-paging sees every item."""
    destination = connected_account(fake, client)
    ids = [
        client.v1.transfers.create(
            params={"amount": 100 + n, "currency": "usd", "destination": destination}
        ).id
        for n in range(5)
    ]
    page = client.v1.transfers.list(params={"limit": 2})
    assert ([t.id for t in page.data], page.has_more) == (ids[:-3:-1], True)
    assert [t.id for t in page.auto_paging_iter()] == ids[::-1]


def test_payouts_on_a_connected_account(fake, client):
    """Payouts live on the connected account (``Stripe-Account``) and move through paid/failed."""
    restricted = connected_account(fake, client, onboarded=False)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payouts.create(
            params={"amount": 1000, "currency": "usd"}, options={"stripe_account": restricted}
        )
    assert info.value.code == "payouts_not_allowed"
    account = connected_account(fake, client, funds=2500)
    payout = client.v1.payouts.create(
        params={"amount": 2500, "currency": "usd", "metadata": {"payout_id": "9"}},
        options={"stripe_account": account, "idempotency_key": "payout:9"},
    )
    assert (payout.status, payout.amount, payout.method) == ("pending", 2500, "standard")
    assert set(payout.to_dict()) == set(FIXTURES["payout"])
    assert fake.requests[-1].stripe_account == account
    assert fake.events[-1]["type"] == "payout.created"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payouts.retrieve(payout.id)
    assert info.value.http_status == 404
    assert (
        client.v1.payouts.retrieve(payout.id, options={"stripe_account": account}).id == payout.id
    )
    listed = client.v1.payouts.list(
        params={"status": "pending"}, options={"stripe_account": account}
    )
    assert [p.id for p in listed.data] == [payout.id]
    paid = fake.pay_payout(payout.id)
    assert (paid["type"], paid["account"], paid["data"]["object"]["status"]) == (
        "payout.paid",
        account,
        "paid",
    )
    failed = fake.fail_payout(payout.id, failure_code="account_closed")
    assert failed["type"] == "payout.failed"
    assert failed["data"]["object"]["failure_code"] == "account_closed"
    assert failed["data"]["object"]["failure_message"] == "The bank account has been closed."
    assert failed["data"]["object"]["failure_balance_transaction"].startswith("txn_")
    assert failed["data"]["previous_attributes"]["status"] == "paid"
    with pytest.raises(ValueError):
        fake.cancel_payout(payout.id)


def test_payout_cancel(fake, client):
    """A pending payout can be canceled through the API or the simulator."""
    account = connected_account(fake, client, funds=200)
    options = {"stripe_account": account}
    by_api = client.v1.payouts.create(params={"amount": 100, "currency": "usd"}, options=options)
    assert client.v1.payouts.cancel(by_api.id, options=options).status == "canceled"
    assert fake.events[-1]["type"] == "payout.canceled"
    by_sim = client.v1.payouts.create(params={"amount": 100, "currency": "usd"}, options=options)
    assert fake.cancel_payout(by_sim.id)["data"]["object"]["status"] == "canceled"


def test_events_can_be_fetched(fake, client):
    """Events are retrievable by id, Connect events only on their account."""
    account = connected_account(fake, client)
    platform_event = fake.expire_checkout(
        client.v1.checkout.sessions.create(params=session_params()).id
    )
    connect_event = fake.events[-2]
    assert connect_event["account"] == account
    assert client.v1.events.retrieve(platform_event["id"]).type == "checkout.session.expired"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(connect_event["id"])
    fetched = client.v1.events.retrieve(connect_event["id"], options={"stripe_account": account})
    assert fetched.type == "account.updated"
    listed = client.v1.events.list(params={"type": "checkout.session.expired"})
    assert [e.id for e in listed.data] == [platform_event["id"]]


# --- faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code", "exception"),
    [
        (400, "invalid_request_error", "parameter_invalid_integer", "InvalidRequestError"),
        (402, "card_error", "card_declined", "CardError"),
        (429, "invalid_request_error", "rate_limit", "RateLimitError"),
        (500, "api_error", None, "APIError"),
    ],
)
def test_fail_next_maps_to_sdk_exceptions(fake, client, status, error_type, code, exception):
    """Injected errors reach the caller as the SDK's matching exception, once."""
    destination = connected_account(fake, client)
    fake.fail_next("POST", "/v1/transfers", status=status, error_type=error_type, code=code)
    params = {"amount": 100, "currency": "usd", "destination": destination}
    with pytest.raises(getattr(stripe, exception)) as info:
        client.v1.transfers.create(params=params, options={"idempotency_key": "t-1"})
    assert info.value.http_status == status
    assert (
        client.v1.transfers.create(params=params, options={"idempotency_key": "t-1"}).amount == 100
    )
    assert not fake.requests[-1].replayed


def test_sdk_retries_injected_server_errors(fake, client, no_retry_sleep):
    """With ``max_network_retries`` the SDK retries a 500 with the same key and succeeds."""
    fake.fail_next("POST", "/v1/accounts", times=2)
    retrying = stripe_client(fake, max_network_retries=2)
    account = retrying.v1.accounts.create(params={"type": "express"})
    attempts = [r for r in fake.requests if r.path == "/v1/accounts"]
    assert [r.status for r in attempts] == [500, 500, 200]
    assert len({r.idempotency_key for r in attempts}) == 1
    assert attempts[-1].idempotency_key is not None
    assert account.id.startswith("acct_")


def test_timeout_then_retry_replays(fake, client):
    """A request that timed out client-side still ran; the retry replays it, no second transfer."""
    destination = connected_account(fake, client)
    fake.delay_next("POST", "/v1/transfers", 1.0)
    impatient = stripe_client(fake, timeout=0.2)
    params = {
        "amount": 700,
        "currency": "usd",
        "destination": destination,
        "transfer_group": "payout:7",
    }
    with pytest.raises(stripe.APIConnectionError) as info:
        impatient.v1.transfers.create(params=params, options={"idempotency_key": "payout:7"})
    assert info.value.should_retry
    retried = client.v1.transfers.create(params=params, options={"idempotency_key": "payout:7"})
    assert fake.requests[-1].replayed
    listed = client.v1.transfers.list(params={"transfer_group": "payout:7"})
    assert [t.id for t in listed.data] == [retried.id]


def test_dropped_connection_is_retried_by_the_sdk(fake, client, no_retry_sleep):
    """A dropped response is an ``APIConnectionError``; the SDK's own retry replays it."""
    destination = connected_account(fake, client)
    params = {"amount": 300, "currency": "usd", "destination": destination}
    fake.drop_next("POST", "/v1/transfers")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.transfers.create(params=params)
    fake.drop_next("POST", "/v1/transfers")
    retrying = stripe_client(fake, max_network_retries=1)
    transfer = retrying.v1.transfers.create(params=params)
    assert fake.requests[-1].replayed
    assert len(client.v1.transfers.list(params={"limit": 100}).data) == 2
    assert transfer.amount == 300


def test_fault_matching_by_method_and_prefix(fake, client):
    """A fault fires only on its method and path prefix, ``times`` times."""
    fake.fail_next("POST", "/v1/account_links", times=2)
    account = client.v1.accounts.create(params={"type": "express"})
    client.v1.accounts.retrieve(account.id)
    assert all(r.status == 200 for r in fake.requests)
    link = {
        "account": account.id,
        "type": "account_onboarding",
        "refresh_url": "https://example.com/r",
        "return_url": "https://example.com/r",
    }
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.account_links.create(params=link)
    assert client.v1.account_links.create(params=link).object == "account_link"
    with pytest.raises(ValueError):
        fake.fail_next("GET", "/v1", times=0)


# --- concurrency --------------------------------------------------------------


def test_concurrent_clients(fake, client):
    """Threads creating objects at once get distinct objects; one shared key makes one."""
    destination = connected_account(fake, client)
    results, errors = [], []

    def work(worker):
        try:
            for n in range(5):
                transfer = client.v1.transfers.create(
                    params={"amount": 100, "currency": "usd", "destination": destination},
                    options={"idempotency_key": f"w{worker}-{n}"},
                )
                results.append(transfer.id)
            shared = client.v1.transfers.create(
                params={"amount": 5, "currency": "usd", "destination": destination},
                options={"idempotency_key": "shared"},
            )
            results.append(shared.id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert len(results) == 48
    assert len(set(results)) == 41
    assert len(client.v1.transfers.list(params={"limit": 100}).data) == 41


# --- clock and internals ------------------------------------------------------


def test_clock_sets_created_times():
    """``created`` fields follow the given clock; a ``FakeClock`` (datetimes) works too."""
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    with FakeStripe(clock=clock) as fake:
        client = stripe_client(fake)
        first = client.v1.accounts.create(params={"type": "express"})
        clock.advance(hours=1)
        second = client.v1.accounts.create(params={"type": "express"})
    assert first.created == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    assert second.created - first.created == 3600


def test_a_bug_in_the_fake_is_a_500_the_sdk_does_not_retry(fake, monkeypatch, no_retry_sleep):
    """An unexpected exception inside the fake answers 500 with ``Stripe-Should-Retry: false``."""

    def broken(call):
        raise RuntimeError("boom")

    monkeypatch.setattr(fake, "_route", broken)
    with pytest.raises(stripe.APIError, match="FakeStripe internal error"):
        stripe_client(fake, max_network_retries=3).v1.accounts.create(params={"type": "express"})
    assert [r.status for r in fake.requests] == [500]
