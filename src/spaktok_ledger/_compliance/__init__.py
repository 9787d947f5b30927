"""Compliance: transaction monitoring, review cases, encryption at rest, erasure, audit.

The public names are in :mod:`spaktok_ledger.compliance`. This package
imports nothing at import time: the service layer imports its low-level
modules (monitoring hooks, the vault, the audit log), and the review desk
(``_cases``) imports the services, so importing both from here would make
an import cycle.
"""
