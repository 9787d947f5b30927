"""Django integration: the ledger inside the request's ``transaction.atomic()``.

Add ``"spaktok_ledger.contrib.django"`` to ``INSTALLED_APPS`` and, optionally,
configure it in ``settings.py``::

    SPAKTOK_LEDGER = {
        "DATABASE": "default",     # the Django database (PostgreSQL) holding the ledger
        "PREFIX": "spaktok_",      # table-name prefix of the ledger's tables
        "GIFTS": "gifts.toml",     # gift catalogue for get_economy() (a path, or a GiftCatalogue)
        "HOLD_DAYS": 0,            # earnings hold period for get_economy()
        "ENGINE_OPTIONS": {},      # keyword arguments for the ledger's own engine
    }

Then, in a view, write your rows and the ledger's in one transaction::

    from django.db import transaction
    from spaktok_ledger.contrib import django as spaktok

    with spaktok.atomic() as ledger:          # transaction.atomic() + the ledger joined to it
        receipt = spaktok.get_economy().using(ledger).send_gift(...)
        GiftOrder.objects.create(entry_id=receipt.entry_id, ...)

:func:`atomic` (or :func:`joined` inside a ``transaction.atomic()`` block of
your own, or with ``ATOMIC_REQUESTS``) runs the ledger's statements on
**Django's own connection**: the host's rows and the ledger's entries commit
together, or roll back together; a refused ledger call rolls back only its own
savepoint. Outside a transaction, :func:`get_ledger` and :func:`get_economy`
work on their own connections, each call a transaction of its own (what
Django's autocommit does for ``Model.save()``). PostgreSQL with psycopg 3 only.

Management commands: ``manage.py spaktok_migrate`` (create or upgrade the
ledger's tables and open the platform accounts) and ``manage.py spaktok_ledger
COMMAND ...`` (the ``spaktok-ledger`` command line on Django's database).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

try:
    from django.conf import settings as django_settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections, transaction
    from django.db.transaction import TransactionManagementError
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by the extras test
    raise ModuleNotFoundError(
        "spaktok_ledger.contrib.django needs Django: pip install 'spaktok-ledger[django]'",
        name=exc.name,
    ) from exc

from spaktok_ledger._catalogue import GiftCatalogue
from spaktok_ledger._service import GiftEconomy
from spaktok_ledger._store import DEFAULT_PREFIX, Ledger, create_engine
from spaktok_ledger.contrib.django._bridge import bridge_engine

__all__ = [
    "SETTING",
    "LedgerSettings",
    "atomic",
    "database_url",
    "get_economy",
    "get_ledger",
    "joined",
    "ledger_settings",
    "reset",
]

SETTING: Final = "SPAKTOK_LEDGER"
_KEYS: Final = frozenset({"DATABASE", "PREFIX", "GIFTS", "HOLD_DAYS", "ENGINE_OPTIONS"})
# Keys of a Django database's OPTIONS that are Django's own, not libpq parameters.
_DJANGO_OPTIONS: Final = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory"}
)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """``settings.SPAKTOK_LEDGER``, validated."""

    database: str = "default"
    prefix: str = DEFAULT_PREFIX
    gifts: GiftCatalogue | None = None
    hold_days: int = 0
    engine_options: Mapping[str, Any] = field(default_factory=dict)


def ledger_settings() -> LedgerSettings:
    """Read and check ``settings.SPAKTOK_LEDGER`` (``ImproperlyConfigured`` if wrong)."""
    raw = getattr(django_settings, SETTING, {}) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{SETTING} must be a dict")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{SETTING}: unknown keys {unknown}; known: {sorted(_KEYS)}")
    database = raw.get("DATABASE", "default")
    if database not in django_settings.DATABASES:
        raise ImproperlyConfigured(f"{SETTING}['DATABASE']: no database {database!r} in DATABASES")
    gifts = raw.get("GIFTS")
    if isinstance(gifts, str | Path):
        gifts = GiftCatalogue.load(gifts)
    elif gifts is not None and not isinstance(gifts, GiftCatalogue):
        raise ImproperlyConfigured(f"{SETTING}['GIFTS'] must be a file path or a GiftCatalogue")
    hold_days = raw.get("HOLD_DAYS", 0)
    if isinstance(hold_days, bool) or not isinstance(hold_days, int) or hold_days < 0:
        raise ImproperlyConfigured(f"{SETTING}['HOLD_DAYS'] must be a whole number of days")
    options = raw.get("ENGINE_OPTIONS", {})
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"{SETTING}['ENGINE_OPTIONS'] must be a dict")
    return LedgerSettings(
        database=database,
        prefix=raw.get("PREFIX", DEFAULT_PREFIX),
        gifts=gifts,
        hold_days=hold_days,
        engine_options=dict(options),
    )


def database_url(using: str | None = None) -> sa.URL:
    """The SQLAlchemy URL of a Django database (``postgresql+psycopg://...``)."""
    alias = using or ledger_settings().database
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"spaktok_ledger.contrib.django joins transactions on PostgreSQL only; database "
            f"{alias!r} is {connection.vendor}"
        )
    import django.db.backends.postgresql.base as backend

    if not getattr(backend, "is_psycopg3", False):
        raise ImproperlyConfigured(
            "spaktok_ledger.contrib.django needs psycopg 3 on Django's side too "
            "(pip install 'spaktok-ledger[django]'), not psycopg2"
        )
    conf = connection.settings_dict
    query = {
        str(k): str(v)
        for k, v in (conf.get("OPTIONS") or {}).items()
        if k not in _DJANGO_OPTIONS and isinstance(v, str | int) and not isinstance(v, bool)
    }
    port = conf.get("PORT")
    return sa.URL.create(
        "postgresql+psycopg",
        username=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        host=conf.get("HOST") or None,
        port=int(port) if port else None,
        database=conf.get("NAME") or None,
        query=query,
    )


_lock = threading.Lock()
_ledgers: dict[tuple[str, str, str], Ledger] = {}
_economies: dict[int, GiftEconomy] = {}


def get_ledger(using: str | None = None) -> Ledger:
    """The process's :class:`Ledger` on the Django database, with its own connections.

    Use it outside a transaction (each call commits on its own), for the
    services that call Stripe between database steps (``Payments``,
    ``Payouts``: a Stripe call must not sit inside your transaction), and as
    the ledger that :func:`atomic` / :func:`joined` join to Django's.
    """
    conf = ledger_settings()
    alias = using or conf.database
    url = database_url(alias)
    key = (alias, url.render_as_string(hide_password=False), conf.prefix)
    with _lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            engine = create_engine(url, **dict(conf.engine_options))
            ledger = Ledger(engine, prefix=conf.prefix)
            _ledgers[key] = ledger
        return ledger


def get_economy(using: str | None = None) -> GiftEconomy:
    """A :class:`GiftEconomy` on :func:`get_ledger`, configured from the settings
    (``GIFTS``, ``HOLD_DAYS``); ``economy.using(ledger)`` joins it to :func:`atomic`."""
    ledger = get_ledger(using)
    conf = ledger_settings()
    with _lock:
        economy = _economies.get(id(ledger))
        if economy is None:
            economy = GiftEconomy(ledger, conf.gifts, hold_days=conf.hold_days)
            _economies[id(ledger)] = economy
        return economy


def reset() -> None:
    """Forget the cached ledgers and dispose of their engines (tests, settings changes)."""
    with _lock:
        for ledger in _ledgers.values():
            if ledger.engine is not None:
                ledger.engine.dispose()
        _ledgers.clear()
        _economies.clear()


@contextmanager
def joined(ledger: Ledger | None = None, *, using: str | None = None) -> Iterator[Ledger]:
    """``ledger`` (default :func:`get_ledger`) joined to the transaction Django has open.

    Must run inside ``transaction.atomic()`` (or a request with
    ``ATOMIC_REQUESTS``): ``TransactionManagementError`` otherwise, since in
    autocommit mode there is no transaction to join. The ledger's statements
    run on Django's connection; each ledger call is a savepoint of Django's
    transaction, which Django commits or rolls back.
    """
    alias = using or ledger_settings().database
    if not connections[alias].in_atomic_block:
        raise TransactionManagementError(
            "spaktok_ledger.contrib.django.joined() needs an open transaction: call it "
            "inside transaction.atomic(), or use atomic() from this module"
        )
    base = ledger or get_ledger(alias)
    with bridge_engine(alias, database_url(alias)).connect() as connection:
        yield base.using(connection)


@contextmanager
def atomic(
    ledger: Ledger | None = None, *, using: str | None = None, durable: bool = False
) -> Iterator[Ledger]:
    """``transaction.atomic()`` with ``ledger`` (default :func:`get_ledger`) joined to it.

    Everything in the block — the host's model writes and the ledger's
    entries — commits at the end, or rolls back together if it raises.
    Nested inside another ``atomic()``, it is a savepoint, as Django's is.
    """
    alias = using or ledger_settings().database
    with transaction.atomic(using=alias, durable=durable), joined(ledger, using=alias) as tx:
        yield tx
