"""The audit trail: one function records one row, in the caller's transaction.

Recording in the same transaction as the change means the trail never shows
a write that was rolled back, nor misses one that was committed. The SCIM
server calls :func:`record` for every write; an audit plugin fed by
``gateway_user_event`` can call it with ``context.dbsession`` as well.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .db.models import AuditEvent, utcnow
from .db.prepared import Prepared, session_connection

_COLUMNS = ("at", "actor", "action", "target_type", "target_id", "target_name", "source", "correlation_id", "details")
_INSERT = Prepared(sa.insert(AuditEvent).values({c: sa.bindparam(c) for c in _COLUMNS}))


def record(
    dbsession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | None = None,
    target_name: str | None = None,
    source: str,
    correlation_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Insert one audit row at once, in ``dbsession``'s transaction.

    ``actor`` is who did it (``scim:<token name>``, ``user:<userName>``,
    ``system``); ``action`` a dotted verb such as ``scim.user.create``;
    ``target_type`` ``user``, ``group`` or ``token``; ``details`` small JSON
    (changed attribute names, member counts), never secrets. One prebuilt
    statement on the session's connection (no ORM object, no flush): SCIM
    records on every write.
    """
    _INSERT.execute(
        session_connection(dbsession, write=True),
        {
            "at": utcnow(),
            "actor": actor[:256],
            "action": action[:64],
            "target_type": target_type[:32],
            "target_id": target_id,
            "target_name": (target_name or None) and target_name[:512],
            "source": source[:32],
            "correlation_id": correlation_id,
            "details": details or {},
        },
    )
