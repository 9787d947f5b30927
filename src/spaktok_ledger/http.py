"""HTTP problem details (RFC 9457) for the library's errors, for any web framework.

One table, owned by the library, maps every :class:`~spaktok_ledger.LedgerError`
to an HTTP status and a problem type; :func:`problem_for` turns a caught error
into a :class:`Problem`, whose :meth:`Problem.to_dict` is the
``application/problem+json`` body and whose ``headers`` (``Retry-After``) go
on the response. Nothing here imports a web framework::

    from spaktok_ledger.http import PROBLEM_JSON, problem_for

    try:
        receipt = economy.send_gift(user, streamer, gift_id, 1, idempotency_key=key)
    except LedgerError as exc:
        problem = problem_for(exc)
        return Response(problem.to_json(), problem.status, problem.headers,
                        content_type=PROBLEM_JSON)

RFC 9457 (https://www.rfc-editor.org/rfc/rfc9457) is the spec followed here:

- ``type`` (section 3.1.1) is a URI identifying the problem type; by default it
  points at the type's entry in ``docs/http.md`` (human-readable documentation,
  as the RFC recommends), ending in ``#`` + the error's ``code``;
- ``status`` (3.1.2) repeats the HTTP status code of the response;
- ``title`` (3.1.3) is fixed per problem type: it never varies between
  occurrences, so clients may show it as is;
- ``detail`` (3.1.4) is the error's message: this occurrence, in plain words;
- ``instance`` (3.1.5) is set only when the caller passes one;
- extension members (3.2): ``code`` (the error's stable machine-readable name)
  and the error's ``details`` (amounts, ids: never secrets, see section 5 of
  the RFC), converted to JSON (``Decimal`` as a string, times in ISO 8601). A
  detail whose name is a member the RFC defines (``status``, ``type``...) or
  ``code`` is sent as ``error_<name>`` so it never overrides the standard one.
"""

from spaktok_ledger._problems import (
    DOCS_TYPE_BASE,
    PROBLEM_JSON,
    PROBLEM_SCHEMA,
    PROBLEM_TYPES,
    Problem,
    ProblemError,
    ProblemType,
    make_problem,
    problem_for,
    problem_type,
)

__all__ = [
    "DOCS_TYPE_BASE",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "PROBLEM_TYPES",
    "Problem",
    "ProblemError",
    "ProblemType",
    "make_problem",
    "problem_for",
    "problem_type",
]
