"""Sign webhook payloads the way Stripe does, so tests can post them to a real endpoint.

Stripe signs ``f"{timestamp}.{body}"`` with HMAC-SHA256 under the endpoint's
secret and sends ``Stripe-Signature: t=<timestamp>,v1=<hex digest>``. These
helpers need only the standard library; the real SDK's
``stripe.Webhook.construct_event`` accepts what they produce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["event_payload", "sign_payload", "signed_event"]


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` under ``secret``.

    ``timestamp`` defaults to now; pass an old one to test the tolerance check.

    >>> sign_payload(b'{"id": "evt_1"}', "whsec_test", timestamp=1700000000)
    't=1700000000,v1=a0c091828640f0b68061abc7c03981ad1100ff7160c5dba6b656239494a2b537'
    """
    if not isinstance(payload, bytes | bytearray):
        raise TypeError("payload must be the raw request body as bytes")
    signed_at = int(time.time()) if timestamp is None else int(timestamp)
    message = str(signed_at).encode("ascii") + b"." + bytes(payload)
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={signed_at},v1={digest}"


def event_payload(event: Mapping[str, Any]) -> bytes:
    """The request body Stripe would post for ``event``: pretty-printed UTF-8 JSON.

    >>> event_payload({"id": "evt_1", "object": "event"})
    b'{\\n  "id": "evt_1",\\n  "object": "event"\\n}'
    """
    return json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")


def signed_event(
    event: Mapping[str, Any], secret: str, timestamp: int | None = None
) -> tuple[bytes, str]:
    """``(body, Stripe-Signature header)`` for posting ``event`` to a webhook endpoint.

    >>> body, signature = signed_event(event, "whsec_test")  # doctest: +SKIP
    >>> client.post("/stripe/webhook", content=body,
    ...             headers={"Stripe-Signature": signature})  # doctest: +SKIP
    """
    payload = event_payload(event)
    return payload, sign_payload(payload, secret, timestamp)
