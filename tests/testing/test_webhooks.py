"""Webhook signing helpers, checked against the real SDK's verification."""

from __future__ import annotations

import json
import re
import time

import pytest

stripe = pytest.importorskip("stripe")

from spaktok_ledger.testing import (  # noqa: E402 - after importorskip
    FakeStripe,
    event_payload,
    sign_payload,
    signed_event,
    stripe_client,
)

SECRET = "whsec_test_secret"
EVENT = {
    "id": "evt_1TestWebhook",
    "object": "event",
    "type": "checkout.session.completed",
    "data": {"object": {"id": "cs_test_1", "object": "checkout.session", "note": "crème brûlée"}},
}


def test_signature_header_has_stripes_format():
    """The header is ``t=<unix time>,v1=<64 hex digits>``."""
    header = sign_payload(b"{}", SECRET, timestamp=1_700_000_000)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)


def test_sdk_accepts_a_signed_event():
    """``stripe.Webhook.construct_event`` verifies and parses what ``signed_event`` produces."""
    body, header = signed_event(EVENT, SECRET)
    event = stripe.Webhook.construct_event(body, header, SECRET)
    assert event.id == "evt_1TestWebhook"
    assert event.type == "checkout.session.completed"
    assert event.data.object.note == "crème brûlée"


def test_sdk_accepts_the_payload_as_text():
    """Frameworks that hand over the body as ``str`` verify too (the SDK signs the text)."""
    body, header = signed_event(EVENT, SECRET)
    assert stripe.Webhook.construct_event(body.decode("utf-8"), header, SECRET).id == EVENT["id"]


def test_event_payload_is_the_event_as_json():
    """The body is the event's JSON, UTF-8, and round-trips."""
    assert json.loads(event_payload(EVENT)) == EVENT


def test_tampered_body_is_rejected():
    """A body changed after signing fails verification."""
    body, header = signed_event(EVENT, SECRET)
    tampered = body.replace(b"cs_test_1", b"cs_test_2")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, SECRET)


def test_wrong_secret_is_rejected():
    """A payload signed with another endpoint's secret fails verification."""
    body, header = signed_event(EVENT, "whsec_other_endpoint")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, SECRET)


def test_old_timestamp_is_rejected():
    """A signature older than the tolerance (300 s by default) fails verification."""
    body, header = signed_event(EVENT, SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(body, header, SECRET)


def test_explicit_recent_timestamp_is_accepted():
    """A caller-chosen timestamp inside the tolerance verifies."""
    body, header = signed_event(EVENT, SECRET, timestamp=int(time.time()) - 60)
    assert stripe.Webhook.construct_event(body, header, SECRET).id == EVENT["id"]


def test_sign_payload_wants_bytes():
    """Signing a ``str`` is refused: signatures cover the raw bytes."""
    with pytest.raises(TypeError):
        sign_payload("{}", SECRET)  # type: ignore[arg-type]


def test_fake_stripe_event_round_trips_through_the_sdk():
    """An event from the simulator, signed, is read back by the SDK with its object intact."""
    with FakeStripe() as fake:
        client = stripe_client(fake)
        account = client.v1.accounts.create(params={"type": "express"})
        event = fake.onboard_account(account.id)
    body, header = signed_event(event, SECRET)
    parsed = stripe.Webhook.construct_event(body, header, SECRET)
    assert parsed.type == "account.updated"
    assert parsed.account == account.id
    assert parsed.data.object.payouts_enabled is True
    assert parsed.data.previous_attributes.payouts_enabled is False
