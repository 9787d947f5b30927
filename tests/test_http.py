"""spaktok_ledger.http: RFC 9457 problem details for every library error."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import spaktok_ledger
from spaktok_ledger import (
    InsufficientFunds,
    InvalidInput,
    LedgerBusy,
    LedgerError,
    NotFound,
    PaymentProviderError,
    UnknownGift,
    WebhookVerificationError,
)
from spaktok_ledger.http import (
    DOCS_TYPE_BASE,
    PROBLEM_SCHEMA,
    PROBLEM_TYPES,
    Problem,
    ProblemError,
    make_problem,
    problem_for,
    problem_type,
)

HTTP_DOC = Path(__file__).resolve().parents[1] / "docs" / "http.md"


def library_errors() -> list[type[LedgerError]]:
    """Every LedgerError class the library defines (not the tests' own subclasses)."""
    found: list[type[LedgerError]] = []
    todo: list[type[LedgerError]] = [LedgerError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("spaktok_ledger") and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


def instance_of(cls: type[LedgerError]) -> LedgerError:
    return cls(f"a {cls.__name__}")


def test_every_library_error_has_its_own_mapping() -> None:
    """Each LedgerError subclass in the library is in PROBLEM_TYPES by name, not by inheritance."""
    errors = library_errors()
    assert len(errors) >= 49  # the tree drawn in _errors.py
    missing = [cls.__name__ for cls in errors if cls not in PROBLEM_TYPES]
    assert not missing, f"add these to spaktok_ledger.http.PROBLEM_TYPES: {missing}"


@pytest.mark.parametrize("cls", library_errors(), ids=lambda c: c.__name__)
def test_every_error_becomes_a_complete_problem(cls: type[LedgerError]) -> None:
    """problem_for gives each error its status, a type URI ending in its code, a title, a detail."""
    problem = problem_for(instance_of(cls))
    body = problem.to_dict()
    assert 400 <= body["status"] <= 599
    assert body["status"] == PROBLEM_TYPES[cls].status
    assert body["type"] == DOCS_TYPE_BASE + cls("x").code
    assert body["title"] == PROBLEM_TYPES[cls].title
    assert body["detail"] == f"a {cls.__name__}"
    assert json.loads(problem.to_json()) == body


def test_statuses_follow_the_families() -> None:
    """Refusals the client can fix are 4xx; bad input 422, lookups 404; infrastructure 5xx."""
    for cls in library_errors():
        status = PROBLEM_TYPES[cls].status
        if issubclass(cls, InvalidInput) and cls.__name__ != "WebhookPayloadError":
            assert status == 422, cls
        if issubclass(cls, NotFound):
            assert status == 404, cls
    assert problem_for(WebhookVerificationError("forged")).status == 400
    assert problem_for(LedgerBusy("busy")).status == 503


def test_details_become_extension_members() -> None:
    """The error's details are top-level members, JSON-safe: Decimal as a string, times ISO."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    exc = InsufficientFunds(
        "wallet too low",
        account="user:al:wallet",
        available_minor=500,
        required_minor=5000,
        rate=Decimal("0.934143"),
        at=at,
        accounts=("a", "b"),
    )
    body = problem_for(exc).to_dict()
    assert body["code"] == "insufficient_funds"
    assert (body["available_minor"], body["required_minor"]) == (500, 5000)
    assert body["rate"] == "0.934143"
    assert body["at"] == "2026-01-02T03:04:05+00:00"
    assert body["accounts"] == ["a", "b"]
    json.dumps(body)  # serialisable as is


def test_a_detail_never_overrides_a_standard_member() -> None:
    """Details named status/type/title/detail/instance/code are sent as error_<name>."""
    exc = NotFound("gone", status="posted", type="gift", code="x", title="t", detail="d")
    body = problem_for(exc).to_dict()
    assert body["status"] == 404 and body["code"] == "not_found"
    assert body["title"] == "Not found" and body["detail"] == "gone"
    assert body["error_status"] == "posted" and body["error_type"] == "gift"
    assert body["error_code"] == "x" and body["error_detail"] == "d"


def test_retry_after_for_retryable_errors() -> None:
    """LedgerBusy and retryable provider errors carry Retry-After; a decline does not."""
    assert problem_for(LedgerBusy("busy")).headers == {"Retry-After": "1"}
    timeout = problem_for(PaymentProviderError("timeout", retryable=True))
    assert timeout.headers == {"Retry-After": "1"}
    assert timeout.to_dict()["retryable"] is True
    declined = problem_for(PaymentProviderError("declined"))
    assert declined.headers == {} and declined.to_dict()["retryable"] is False
    assert problem_for(UnknownGift("no such gift")).headers == {}


def test_a_hosts_own_subclass_gets_its_parents_answer() -> None:
    """Lookups walk the MRO: an application's subclass of NotFound is a 404."""

    class UnknownOrder(NotFound):
        pass

    assert problem_type(UnknownOrder).status == 404
    problem = problem_for(UnknownOrder("no order 7", order_id=7))
    assert (problem.status, problem.code, problem.to_dict()["order_id"]) == (404, "unknown_order", 7)


def test_problem_for_refuses_other_exceptions() -> None:
    """Only library errors are mapped: anything else is the host's bug, not a problem type."""
    with pytest.raises(TypeError):
        problem_for(ValueError("x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        problem_type(ValueError)  # type: ignore[arg-type]


def test_make_problem_for_the_hosts_refusals() -> None:
    """make_problem builds the host's own problems in the same shape; ProblemError carries one."""
    problem = make_problem(
        401, "unauthenticated", "Authentication required", "send a token",
        headers={"WWW-Authenticate": "Bearer"}, instance="/api/wallet/balance", hint=Decimal("1.5"),
    )
    body = problem.to_dict()
    assert body == {
        "type": DOCS_TYPE_BASE + "unauthenticated",
        "title": "Authentication required",
        "status": 401,
        "detail": "send a token",
        "code": "unauthenticated",
        "instance": "/api/wallet/balance",
        "hint": "1.5",
    }
    assert ProblemError(problem).problem is problem
    with pytest.raises(ValueError):
        make_problem(200, "ok", "OK", "not a problem")
    custom = problem_for(UnknownGift("no"), type_base="https://example.com/problems/")
    assert custom.type == "https://example.com/problems/unknown_gift"


def test_every_problem_validates_against_the_schema() -> None:
    """PROBLEM_SCHEMA (for OpenAPI documents) accepts every problem the library makes."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(dict(PROBLEM_SCHEMA))
    for cls in library_errors():
        validator.validate(problem_for(instance_of(cls)).to_dict())
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"type": "x", "title": "t", "status": 200, "detail": "d", "code": "c"})


def test_docs_list_every_problem_type() -> None:
    """docs/http.md has an entry (the type URI's fragment) and the status for every error code."""
    text = HTTP_DOC.read_text()
    for cls in library_errors():
        code = cls("x").code
        row = re.search(rf'^\| <a id="{code}"></a>`{code}` \| (\d{{3}}) \|', text, re.M)
        assert row, f"docs/http.md lacks a row for {code}"
        assert int(row.group(1)) == PROBLEM_TYPES[cls].status, code


def test_problem_is_exported_from_the_http_module_only() -> None:
    """The front door stays small: the problem helpers live in spaktok_ledger.http."""
    assert not hasattr(spaktok_ledger, "problem_for")
    assert isinstance(problem_for(LedgerError("x")), Problem)
