"""The gift-economy use cases host apps call from their endpoints."""

from spaktok_ledger._service._ids import check_party_id
from spaktok_ledger._service._quotes import Pricing, QuoteStore

__all__ = ["Pricing", "QuoteStore", "check_party_id"]
