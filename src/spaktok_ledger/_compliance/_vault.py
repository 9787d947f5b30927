"""Envelope encryption: a data key per party, wrapped by the keyring's active key.

Personal data is sealed with the data key of the party it is about (a
viewer or a streamer, by the host's pseudonymous id). The data key is stored
*wrapped* (sealed by a keyring key) in ``{prefix}data_keys``. Two things
follow:

- rotating the keyring re-wraps data keys only: a ciphertext written once
  (inside an append-only journal entry, say) never has to be rewritten;
- erasing a party destroys its wrapped data key (crypto-shredding): every
  value it sealed, wherever it is stored, can never be opened again, while
  the rows that hold it stay exactly as they were.

Data that belongs to no one in particular (a parked Stripe event before the
purchase it names is known) is sealed by the keyring key directly.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._crypto import (
    Keyring,
    Sensitive,
    decrypt_with,
    encrypt_with,
    is_token,
    token_key,
)
from spaktok_ledger._compliance._sql import insert_for
from spaktok_ledger._domain import Json
from spaktok_ledger._errors import DataErased, EncryptionError
from spaktok_ledger._store._schema import LedgerTables

__all__ = ["ERASED", "Vault", "destroy_data_keys"]

ERASED: Final = "[erased]"
"""What :meth:`Vault.reveal` shows in place of a value whose data key was destroyed."""


def _dumps(value: Json) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False).encode()


class Vault:
    """Seals and opens personal data for one ledger (its ``data_keys`` table)."""

    def __init__(self, keyring: Keyring, tables: LedgerTables) -> None:
        self.keyring = keyring
        self._t = tables.compliance.data_keys

    # -- per-party data keys -------------------------------------------------------

    def _live_key(self, conn: Connection, party_id: str, now: datetime) -> tuple[str, bytes]:
        t = self._t
        query = sa.select(t.c.id, t.c.wrapped_key).where(
            t.c.party_id == party_id, t.c.destroyed_at.is_(None)
        )
        row = conn.execute(query).first()
        if row is None:
            key_id = f"dk_{secrets.token_hex(10)}"
            wrapped = self.keyring.encrypt(
                secrets.token_bytes(32), purpose=_wrap_purpose(key_id, party_id)
            )
            conn.execute(
                insert_for(conn, t)
                .values(
                    id=key_id,
                    party_id=party_id,
                    wrapped_key=wrapped,
                    wrapped_by=self.keyring.active_key_id,
                    created_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=[t.c.party_id], index_where=t.c.destroyed_at.is_(None)
                )
            )
            row = conn.execute(query).one()  # ours, or a concurrent writer's
        return row.id, self.keyring.decrypt(
            row.wrapped_key, purpose=_wrap_purpose(row.id, party_id)
        )

    def seal(self, conn: Connection, party_id: str, value: Json, *, now: datetime) -> str:
        """Seal a JSON value with ``party_id``'s data key (created on first use)."""
        key_id, key = self._live_key(conn, party_id, now)
        return encrypt_with(key, "d", key_id, _dumps(value), _party_purpose(party_id))

    def open(self, conn: Connection, token: str) -> Json:
        """Open a token sealed by a party's data key; ``DataErased`` if it was destroyed."""
        kind, key_id = token_key(token)
        if kind != "d":
            raise EncryptionError("this token was sealed by a keyring key, not a data key")
        t = self._t
        row = conn.execute(sa.select(t.c.party_id, t.c.wrapped_key).where(t.c.id == key_id)).first()
        if row is None:
            raise EncryptionError(f"no data key {key_id!r} in this ledger", key_id=key_id)
        if row.wrapped_key is None:
            raise DataErased(
                f"the personal data of {row.party_id} was erased", party_id=row.party_id
            )
        key = self.keyring.decrypt(row.wrapped_key, purpose=_wrap_purpose(key_id, row.party_id))
        return json.loads(decrypt_with(key, token, _party_purpose(row.party_id)))

    def seal_metadata(
        self, conn: Connection, party_id: str, metadata: Mapping[str, Any], *, now: datetime
    ) -> dict[str, Any]:
        """``metadata`` with every :class:`Sensitive` value (at any depth) sealed."""

        def walk(value: Any) -> Any:
            if isinstance(value, Sensitive):
                return self.seal(conn, party_id, value.value, now=now)
            if isinstance(value, Mapping):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [walk(v) for v in value]
            return value

        return {k: walk(v) for k, v in metadata.items()}

    def reveal(self, conn: Connection, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``metadata`` with every data-key token opened (``ERASED`` where it was erased)."""

        def walk(value: Any) -> Any:
            if is_token(value) and token_key(value)[0] == "d":
                try:
                    return self.open(conn, value)
                except DataErased:
                    return ERASED
            if isinstance(value, Mapping):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            return value

        return {k: walk(v) for k, v in metadata.items()}

    def rewrap(self, conn: Connection, *, limit: int) -> int:
        """Re-wrap up to ``limit`` live data keys not wrapped by the active key."""
        t = self._t
        active = self.keyring.active_key_id
        rows = conn.execute(
            sa.select(t.c.id, t.c.party_id, t.c.wrapped_key, t.c.wrapped_by)
            .where(t.c.destroyed_at.is_(None), t.c.wrapped_by != active)
            .order_by(t.c.id)
            .limit(limit)
        ).all()
        for row in rows:
            purpose = _wrap_purpose(row.id, row.party_id)
            raw = self.keyring.decrypt(row.wrapped_key, purpose=purpose)
            conn.execute(
                t.update()
                .where(t.c.id == row.id, t.c.wrapped_by == row.wrapped_by)
                .values(wrapped_key=self.keyring.encrypt(raw, purpose=purpose), wrapped_by=active)
            )
        return len(rows)

    def pending_rewrap(self, conn: Connection) -> int:
        """Live data keys still wrapped by another key than the active one."""
        t = self._t
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    t.c.destroyed_at.is_(None), t.c.wrapped_by != self.keyring.active_key_id
                )
            ).scalar_one()
        )

    # -- data of no particular party -------------------------------------------------

    def seal_system(self, value: Json, *, purpose: str) -> str:
        """Seal a JSON value with the keyring's active key."""
        return self.keyring.encrypt(_dumps(value), purpose=purpose)

    def open_system(self, token: str, *, purpose: str) -> Json:
        return json.loads(self.keyring.decrypt(token, purpose=purpose))


def destroy_data_keys(
    conn: Connection, tables: LedgerTables, party_id: str, *, now: datetime
) -> int:
    """Destroy ``party_id``'s data key(s) (no keyring needed); returns how many were live."""
    t = tables.compliance.data_keys
    result = conn.execute(
        t.update()
        .where(t.c.party_id == party_id, t.c.destroyed_at.is_(None))
        .values(wrapped_key=None, wrapped_by=None, destroyed_at=now)
    )
    return int(result.rowcount or 0)


def _wrap_purpose(key_id: str, party_id: str) -> str:
    return f"data_key:{key_id}:{party_id}"


def _party_purpose(party_id: str) -> str:
    return f"party:{party_id}"
