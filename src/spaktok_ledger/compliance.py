"""Compliance: transaction monitoring with a review queue, encryption at rest, erasure, audit.

- **Monitoring**: rules see every purchase credit, gift and payout request in
  the transaction that writes it, and allow it, hold it for review or
  refuse it (:class:`MonitoringRule`, :class:`MonitoringConfig`,
  :func:`default_rules`).
- **Cases**: what the rules flag waits in a review queue (:class:`Cases`):
  list, assign, decide; a payout waits while its streamer has an open case;
  an export for suspicious-activity reports. Sanctions screening through a
  provider port (:class:`ScreeningProvider`, :class:`StaticListScreening`).
- **Encryption at rest**: personal data sealed with AES-256-GCM under
  per-party data keys wrapped by a :class:`Keyring` (:class:`Sensitive`
  metadata, parked webhook payloads, connected-account details, screened
  identities); :func:`rotate_keys` re-encrypts under a new key.
- **Erasure**: :func:`erase_user` destroys a party's personal data while every
  entry and balance stays.
- **Audit**: every operator action is in an append-only log
  (:meth:`Compliance.audit_log`).

See docs/compliance.md for the obligations each part serves and how to tune it.
"""

from spaktok_ledger._compliance._audit import UNSPECIFIED_ACTOR, AuditAction, AuditRecord
from spaktok_ledger._compliance._cases import (
    Case,
    CaseDecision,
    CaseHold,
    Cases,
    CaseStatus,
    Decision,
)
from spaktok_ledger._compliance._core import Compliance, ScreeningRecord
from spaktok_ledger._compliance._crypto import ENV_KEYRING, Keyring, Sensitive
from spaktok_ledger._compliance._erasure import (
    ErasureReport,
    RotationReport,
    erase_user,
    key_usage,
    rotate_keys,
)
from spaktok_ledger._compliance._links import LinkBasis
from spaktok_ledger._compliance._monitor import (
    GIFT_BUCKET_SECONDS,
    Check,
    EvidenceQuery,
    Facts,
    MonitoringRule,
    Movement,
    MovementKind,
    Outcome,
    Totals,
    Verdict,
)
from spaktok_ledger._compliance._rules import (
    ChargebackRatioRule,
    ConcentrationRule,
    LinkedAccountsRule,
    MonitoringConfig,
    PayoutReviewRule,
    RapidInOutRule,
    ScreeningRule,
    StructuringRule,
    VelocityRule,
    default_rules,
)
from spaktok_ledger._compliance._screening import (
    Identity,
    ListedParty,
    ScreeningMatch,
    ScreeningProvider,
    ScreeningResult,
    ScreeningStatus,
    StaticListScreening,
)
from spaktok_ledger._compliance._vault import ERASED
from spaktok_ledger._errors import (
    CaseClosed,
    ComplianceError,
    DataErased,
    EncryptionError,
    MonitoringRefused,
    ScreeningUnavailable,
    UnknownCase,
)

__all__ = [
    "ENV_KEYRING",
    "ERASED",
    "GIFT_BUCKET_SECONDS",
    "UNSPECIFIED_ACTOR",
    "AuditAction",
    "AuditRecord",
    "Case",
    "CaseClosed",
    "CaseDecision",
    "CaseHold",
    "CaseStatus",
    "Cases",
    "ChargebackRatioRule",
    "Check",
    "Compliance",
    "ComplianceError",
    "ConcentrationRule",
    "DataErased",
    "Decision",
    "EncryptionError",
    "ErasureReport",
    "EvidenceQuery",
    "Facts",
    "Identity",
    "Keyring",
    "LinkBasis",
    "LinkedAccountsRule",
    "ListedParty",
    "MonitoringConfig",
    "MonitoringRefused",
    "MonitoringRule",
    "Movement",
    "MovementKind",
    "Outcome",
    "PayoutReviewRule",
    "RapidInOutRule",
    "RotationReport",
    "ScreeningMatch",
    "ScreeningProvider",
    "ScreeningRecord",
    "ScreeningResult",
    "ScreeningRule",
    "ScreeningStatus",
    "ScreeningUnavailable",
    "Sensitive",
    "StaticListScreening",
    "StructuringRule",
    "Totals",
    "UnknownCase",
    "VelocityRule",
    "Verdict",
    "default_rules",
    "erase_user",
    "key_usage",
    "rotate_keys",
]
