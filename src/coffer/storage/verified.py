"""Reads of authenticated rows: a row is only ever turned into a domain object after its MAC was
checked (``Integrity.check``: a failure is reported and the row treated as absent), and, where a
row rolled back to an older authentic version would give something back (a token, a binding, a
key, an organisation's gate), after its version was checked against the newest change the audit
trail records of it. Functions on a synchronous connection; async reads call them through
``run_sync``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from coffer.domain import integrity
from coffer.domain.keys import KeyStatus
from coffer.domain.keytypes import KeyType
from coffer.domain.permissions import RoleBinding
from coffer.domain.tenants import Organisation, Principal, PrincipalKind
from coffer.storage import schema
from coffer.storage.repositories import Integrity
from coffer.storage.rows import binding_of, organisation_of, utc, utc_or_none

#: Identities per query of the audit trail (well under any engine's limit of bound values).
_IDENTITIES_PER_QUERY = 500


def _mac(row: Row[Any]) -> bytes | None:
    return bytes(row.mac) if row.mac is not None else None


def newest_changes(
    conn: Connection, table: str, identities: Sequence[str]
) -> dict[str, tuple[str, int | None]]:
    """The newest successful change the audit trail records of each identity: (action, the
    object's version after it, if the record says)."""
    events = schema.audit_events
    newest: dict[str, tuple[str, int | None]] = {}
    for start in range(0, len(identities), _IDENTITIES_PER_QUERY):
        rows = conn.execute(
            select(events.c.resource_identity, events.c.action, events.c.record)
            .where(
                events.c.resource_identity.in_(
                    list(identities[start : start + _IDENTITIES_PER_QUERY])
                ),
                events.c.action.in_(integrity.CHANGE_ACTIONS[table]),
                events.c.status < 400,
            )
            .order_by(events.c.seq.desc())
        ).all()
        for identity, action, record in rows:
            if identity in newest:
                continue
            try:
                version = json.loads(record).get("context", {}).get("objectVersion")
            except (ValueError, AttributeError):
                version = None
            newest[identity] = (action, version if isinstance(version, int) else None)
    return newest


def _current(
    conn: Connection,
    checker: Integrity,
    table: str,
    rows: Sequence[Row[Any]],
    version: Any,
    revoked: Any = None,
) -> list[Row[Any]]:
    """``rows`` without those older than the audit trail's newest change of them (reported)."""
    newest = newest_changes(conn, table, [row.identity for row in rows])
    kept = []
    for row in rows:
        found = newest.get(row.identity)
        if found is not None and integrity.rolled_back(
            table, version(row), found[0], found[1],
            revoked=revoked(row) if revoked is not None else False,
        ):  # fmt: skip
            checker.report(table, row.identity, "rolled back to a version older than its last "
                           f"recorded change ({found[0]})")  # fmt: skip
            continue
        kept.append(row)
    return kept


def organisations(
    conn: Connection, checker: Integrity, rows: Sequence[Row[Any]], *, current: bool
) -> list[Organisation]:
    good = [
        row for row in rows
        if checker.check("organisations", row.identity,
                         integrity.organisation_fields(organisation_of(row)), _mac(row))
    ]  # fmt: skip
    if current:
        good = _current(conn, checker, "organisations", good, lambda r: r.object_version)
    return [organisation_of(row) for row in good]


def principal(checker: Integrity, row: Row[Any], prefix: str = "") -> Principal | None:
    """The principal of ``row`` (its columns named with ``prefix``), if authentic."""
    found = Principal(
        identity=getattr(row, f"{prefix}identity"),
        kind=PrincipalKind(getattr(row, f"{prefix}kind")),
        name=getattr(row, f"{prefix}name"),
        platform_admin=getattr(row, f"{prefix}platform_admin"),
        created_at=utc(getattr(row, f"{prefix}created_at")),
        organisation_identity=getattr(row, f"{prefix}organisation_identity"),
    )
    mac = getattr(row, f"{prefix}mac")
    if not checker.check("principals", found.identity, integrity.principal_fields(found),
                         bytes(mac) if mac is not None else None):  # fmt: skip
        return None
    return found


def principals(checker: Integrity, rows: Sequence[Row[Any]]) -> list[Principal]:
    return [p for p in (principal(checker, row) for row in rows) if p is not None]


def token_values(row: Row[Any]) -> tuple[Any, ...]:
    return integrity.token_fields(
        row.identity, row.principal_identity, bytes(row.digest), utc_or_none(row.expires_at),
        utc_or_none(row.revoked_at), row.object_version,
    )  # fmt: skip


def tokens(
    conn: Connection, checker: Integrity, rows: Sequence[Row[Any]], *, current: bool
) -> list[Row[Any]]:
    """The token rows of ``rows`` that are authentic (and current)."""
    good = [
        row for row in rows if checker.check("tokens", row.identity, token_values(row), _mac(row))
    ]
    if current:
        good = _current(conn, checker, "tokens", good, lambda r: r.object_version,
                        lambda r: r.revoked_at is not None)  # fmt: skip
    return good


def bindings(
    conn: Connection, checker: Integrity, rows: Sequence[Row[Any]], *, current: bool
) -> list[RoleBinding]:
    good = [
        row for row in rows
        if checker.check("role_bindings", row.identity,
                         integrity.binding_fields(binding_of(row)), _mac(row))
    ]  # fmt: skip
    if current:
        good = _current(conn, checker, "role_bindings", good, lambda r: None)
    return [binding_of(row) for row in good]


def key_values(row: Row[Any]) -> tuple[Any, ...]:
    return (
        row.identity, row.organisation_identity, row.region, row.project_identity,
        KeyType(row.key_type), KeyStatus(row.status), row.export_allowed, row.imported,
        row.allow_rotation, row.key_rotation_enabled, row.rotation_period_days,
        row.latest_version, row.min_decryption_version, utc_or_none(row.deletion_scheduled_at),
        row.object_version,
    )  # fmt: skip


def key_rows(
    conn: Connection, checker: Integrity, rows: Sequence[Row[Any]], *, current: bool
) -> list[Row[Any]]:
    """The key rows of ``rows`` that are authentic (and current)."""
    good = [row for row in rows if checker.check("keys", row.identity, key_values(row), _mac(row))]
    if current:
        good = _current(conn, checker, "keys", good, lambda r: r.object_version)
    return good
