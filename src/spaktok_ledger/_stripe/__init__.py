"""The Stripe adapter: the payment-gateway port on the official ``stripe`` SDK.

``_gateway.py`` makes the calls (and is the only place that catches
``stripe.*`` errors); ``_parse.py`` turns Stripe's JSON (API answers and
webhook payloads) into the port's types, so no service reads Stripe's shapes.
"""

from spaktok_ledger._stripe._gateway import StripeGateway

__all__ = ["StripeGateway"]
