"""Stripe's form encoding, read back: bracket keys to nested params, and typed lookups.

Stripe's v1 API takes ``application/x-www-form-urlencoded`` bodies (and query
strings) whose keys carry the structure: ``metadata[user_id]=42``,
``line_items[0][price_data][currency]=eur``, ``expand[]=payment_intent``.
:func:`parse_params` turns the pairs back into dicts and lists; the
``*_param`` helpers read one value with Stripe's own validation messages, so
a malformed request gets the 400 Stripe would send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "StripeAPIError",
    "bool_param",
    "check_known_params",
    "created_filter",
    "currency_param",
    "in_range",
    "int_param",
    "metadata_param",
    "parse_params",
    "str_list_param",
    "str_param",
]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_INT = re.compile(r"^-?\d+$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

# Hashes whose keys are chosen by the caller: never read ``{"0": ...}`` there as a list.
_FREE_FORM_HASHES = frozenset({"metadata"})


class StripeAPIError(Exception):
    """An error the fake answers with, in Stripe's shape (``{"error": {...}}``).

    ``stored``: the endpoint had begun executing, so Stripe saves the error
    under the request's idempotency key and replays it to a retry with the
    same key (https://docs.stripe.com/api/idempotent_requests: "regardless of
    whether it succeeds or fails"). Parameter validation errors are not
    stored: "no idempotent result is saved because no API endpoint initiated
    execution".
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.stored = stored

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body Stripe sends for this error."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        if request_id is not None:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def _invalid(message: str, *, code: str | None = None, param: str | None = None) -> StripeAPIError:
    return StripeAPIError(400, message, code=code, param=param)


def parse_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest form pairs by their bracket keys; values stay strings.

    >>> parse_params([("metadata[user_id]", "42"), ("expand[]", "payment_intent")])
    {'metadata': {'user_id': '42'}, 'expand': ['payment_intent']}
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise _invalid(f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        path = [match.group(1), *_SEGMENT.findall(match.group(2))]
        node = root
        for depth, segment in enumerate(path):
            name = str(len(node)) if segment == "" else segment
            if depth == len(path) - 1:
                if isinstance(node.get(name), dict):
                    raise _invalid(
                        f"Invalid hash: {key}", code="parameter_invalid_string", param=key
                    )
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise _invalid(
                        f"Invalid hash: {key}", code="parameter_invalid_string", param=key
                    )
                node = child
    return {key: _listify(value, key in _FREE_FORM_HASHES) for key, value in root.items()}


def _listify(value: Any, free_form: bool) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(child, key in _FREE_FORM_HASHES) for key, child in value.items()}
    if not free_form and items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def check_known_params(params: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse top-level params the endpoint does not take, as Stripe does."""
    allowed = {"expand", *known}
    for name in params:
        if name not in allowed:
            raise _invalid(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


def _missing(name: str) -> StripeAPIError:
    return _invalid(f"Missing required param: {name}.", code="parameter_missing", param=name)


def str_param(
    params: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    choices: Iterable[str] = (),
    param: str | None = None,
) -> str | None:
    """A string param, or ``None`` when absent (an empty string counts as absent)."""
    shown = param or name
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _missing(shown)
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {value!r}", code="parameter_invalid_string", param=shown)
    allowed = tuple(choices)
    if allowed and value not in allowed:
        raise _invalid(
            f"Invalid {shown}: must be one of {', '.join(allowed)}",
            code="parameter_invalid_string",
            param=shown,
        )
    return value


def int_param(
    params: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    minimum: int | None = None,
    param: str | None = None,
) -> int | None:
    """An integer param (Stripe's amounts), or ``None`` when absent."""
    shown = param or name
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _missing(shown)
        return None
    if not isinstance(value, str) or not _INT.match(value):
        raise _invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=shown)
    number = int(value)
    if minimum is not None and number < minimum:
        raise _invalid(
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=shown,
        )
    return number


def currency_param(
    params: Mapping[str, Any],
    name: str = "currency",
    *,
    required: bool = True,
    param: str | None = None,
) -> str | None:
    """A currency code, lower-cased as Stripe returns it."""
    value = str_param(params, name, required=required, param=param)
    if value is None:
        return None
    if not _CURRENCY.match(value):
        raise _invalid(
            f"Invalid currency: {value}.", code="parameter_invalid_string", param=param or name
        )
    return value.lower()


def str_list_param(params: Mapping[str, Any], name: str) -> list[str]:
    """A list of strings (``expand[]=x`` or ``expand[0]=x``); a lone value is a list of one."""
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise _invalid(f"Invalid array: {name}", code="parameter_invalid_string", param=name)


def metadata_param(
    params: Mapping[str, Any], name: str = "metadata", *, param: str | None = None
) -> dict[str, str] | None:
    """Metadata within Stripe's limits; an empty value unsets a key on update."""
    shown = param or name
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid("Invalid hash", code="parameter_invalid_string", param=shown)
    if len(value) > 50:
        raise _invalid("Metadata can have at most 50 keys.", param=shown)
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(
                f"Invalid value for metadata key {key!r}: metadata values are strings.",
                param=f"{shown}[{key}]",
            )
        if len(key) > 40:
            raise _invalid(
                f"Metadata key {key!r} is longer than 40 characters.", param=f"{shown}[{key}]"
            )
        if len(item) > 500:
            raise _invalid(
                f"Metadata value for {key!r} is longer than 500 characters.",
                param=f"{shown}[{key}]",
            )
        result[key] = item
    return result


def bool_param(params: Mapping[str, Any], name: str, *, param: str | None = None) -> bool | None:
    """A boolean param (``true``/``false`` on the wire), or ``None`` when absent."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if value not in ("true", "false"):
        raise _invalid(
            f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param or name
        )
    return bool(value == "true")


def created_filter(params: Mapping[str, Any], name: str = "created") -> tuple[int | None, ...]:
    """Stripe's range filter (``created=123`` or ``created[gte]=...``): ``(gt, gte, lt, lte)``."""
    value = params.get(name)
    if value is None or value == "":
        return (None, None, None, None)
    if isinstance(value, str):
        exact = int_param(params, name)
        return (None, exact, None, exact)
    if not isinstance(value, dict):
        raise _invalid("Invalid hash", code="parameter_invalid_string", param=name)
    unknown = set(value) - {"gt", "gte", "lt", "lte"}
    if unknown:
        key = sorted(unknown)[0]
        raise _invalid(
            f"Received unknown parameter: {name}[{key}]",
            code="parameter_unknown",
            param=f"{name}[{key}]",
        )
    return tuple(
        int_param(value, bound, param=f"{name}[{bound}]") for bound in ("gt", "gte", "lt", "lte")
    )


def in_range(number: int, bounds: tuple[int | None, ...]) -> bool:
    """Whether ``number`` passes a :func:`created_filter` range."""
    gt, gte, lt, lte = bounds
    return (
        (gt is None or number > gt)
        and (gte is None or number >= gte)
        and (lt is None or number < lt)
        and (lte is None or number <= lte)
    )
