"""Accounts the host declares linked: same device, IP address or card fingerprint.

The host computes the fingerprints (it sees the devices, the addresses and,
through Stripe, the card fingerprints); the ledger stores only the pair of
pseudonymous ids and the basis, never the fingerprint itself. Links form
groups (union-find, kept when a link is declared or removed), so the gift
rule asks one question of two primary keys: "same group?".
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from spaktok_ledger._compliance._sql import insert_for
from spaktok_ledger._errors import InvalidInput
from spaktok_ledger._store._schema import LedgerTables

__all__ = ["LinkBasis", "declare_link", "linked_to", "remove_link"]


class LinkBasis(StrEnum):
    """Why the host says two accounts belong together."""

    DEVICE = "device"
    IP = "ip"
    CARD = "card"
    """The same card fingerprint (Stripe's ``payment_method.card.fingerprint``)."""
    OTHER = "other"


def _serialise(conn: Connection, tables: LedgerTables) -> None:
    """One link change at a time (groups are merged and split by several statements)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"spaktok-links:{tables.prefix}".encode()).digest()[:8]
        conn.exec_driver_sql(
            f"SELECT pg_advisory_xact_lock({int.from_bytes(digest, 'big') - 2**63})"
        )


def declare_link(
    conn: Connection,
    tables: LedgerTables,
    party_a: str,
    party_b: str,
    basis: LinkBasis,
    *,
    actor: str,
    now: datetime,
) -> bool:
    """Record the link and merge the two groups; False if it was already declared."""
    if party_a == party_b:
        raise InvalidInput("an account cannot be linked to itself")
    a, b = sorted((party_a, party_b))
    _serialise(conn, tables)
    links, clusters = tables.compliance.links, tables.compliance.clusters
    inserted = conn.execute(
        insert_for(conn, links)
        .values(party_a=a, party_b=b, basis=basis.value, declared_by=actor, declared_at=now)
        .on_conflict_do_nothing()
        .returning(links.c.id)
    ).scalar()
    found = dict(
        conn.execute(
            sa.select(clusters.c.party_id, clusters.c.cluster_id).where(
                clusters.c.party_id.in_([a, b])
            )
        ).all()
    )
    ca, cb = found.get(a), found.get(b)
    if ca is None and cb is None:
        conn.execute(
            clusters.insert(), [{"party_id": a, "cluster_id": a}, {"party_id": b, "cluster_id": a}]
        )
    elif ca is None or cb is None:
        conn.execute(
            clusters.insert(),
            {"party_id": a if ca is None else b, "cluster_id": cb if ca is None else ca},
        )
    elif ca != cb:
        keep, drop = sorted((ca, cb))
        conn.execute(clusters.update().where(clusters.c.cluster_id == drop).values(cluster_id=keep))
    return inserted is not None


def remove_link(
    conn: Connection,
    tables: LedgerTables,
    party_a: str,
    party_b: str,
    basis: LinkBasis | None,
) -> int:
    """Delete the link(s) between two accounts and split their group if it falls apart."""
    a, b = sorted((party_a, party_b))
    _serialise(conn, tables)
    links, clusters = tables.compliance.links, tables.compliance.clusters
    query = links.delete().where(links.c.party_a == a, links.c.party_b == b)
    if basis is not None:
        query = query.where(links.c.basis == basis.value)
    removed = int(conn.execute(query).rowcount or 0)
    cluster = conn.execute(
        sa.select(clusters.c.cluster_id).where(clusters.c.party_id == a)
    ).scalar()
    if removed and cluster is not None:
        _rebuild(conn, tables, cluster)
    return removed


def _rebuild(conn: Connection, tables: LedgerTables, cluster: str) -> None:
    """Recompute the groups of one old group's members from the links left."""
    links, clusters = tables.compliance.links, tables.compliance.clusters
    members = set(
        conn.execute(sa.select(clusters.c.party_id).where(clusters.c.cluster_id == cluster))
        .scalars()
        .all()
    )
    neighbours: dict[str, set[str]] = defaultdict(set)
    for x, y in conn.execute(
        sa.select(links.c.party_a, links.c.party_b).where(
            links.c.party_a.in_(sorted(members)), links.c.party_b.in_(sorted(members))
        )
    ):
        neighbours[x].add(y)
        neighbours[y].add(x)
    conn.execute(clusters.delete().where(clusters.c.cluster_id == cluster))
    rows = []
    seen: set[str] = set()
    for start in sorted(members):
        if start in seen or not neighbours[start]:
            continue
        group, todo = {start}, [start]
        while todo:
            for other in neighbours[todo.pop()]:
                if other not in group:
                    group.add(other)
                    todo.append(other)
        seen |= group
        root = min(group)
        rows += [{"party_id": member, "cluster_id": root} for member in sorted(group)]
    if rows:
        conn.execute(clusters.insert(), rows)


def linked_to(conn: Connection, tables: LedgerTables, party_id: str) -> frozenset[str]:
    """Every account in ``party_id``'s group (itself excluded)."""
    clusters = tables.compliance.clusters
    cluster = conn.execute(
        sa.select(clusters.c.cluster_id).where(clusters.c.party_id == party_id)
    ).scalar()
    if cluster is None:
        return frozenset()
    members = conn.execute(
        sa.select(clusters.c.party_id).where(clusters.c.cluster_id == cluster)
    ).scalars()
    return frozenset(members) - {party_id}
