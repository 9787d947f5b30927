"""Integrations with host frameworks (``spaktok_ledger.contrib.django``)."""
