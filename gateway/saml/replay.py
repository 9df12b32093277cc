"""The replay cache shared by every instance: a SAML message ID is accepted once.

Signed sign-in assertions and signed LogoutRequests are both bearer
messages: whoever captured one could send it again. Their IDs go into one
table (``seen_assertions``; IDs are unique across message kinds) until the
message would expire anyway, and a second use of an ID is refused.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..db.models import SeenAssertion
from ..db.prepared import Prepared, session_connection

_TABLE = SeenAssertion.__table__
_EXPIRED = sa.delete(_TABLE).where(_TABLE.c.expires_at <= sa.bindparam("now"))


def _insert(dialect):
    return (
        dialect.insert(_TABLE)
        .values(assertion_id=sa.bindparam("message_id"), expires_at=sa.bindparam("expires_at"))
        .on_conflict_do_nothing()
        .returning(_TABLE.c.assertion_id)
    )


#: PostgreSQL: the prune rides in the insert's statement (one round trip on the sign-in's hot path).
_FIRST_USE_PG = Prepared(_insert(postgresql).add_cte(_EXPIRED.cte("expired")))
_FIRST_USE_SQLITE, _PRUNE = Prepared(_insert(sqlite)), Prepared(_EXPIRED)


def first_use(dbsession, message_id: str, expires_at, now) -> bool:
    """Record ``message_id`` until ``expires_at``; False if it was already recorded.

    Expired ids are dropped on the way, so that an id past its expiry (refused
    anyway by the time checks) does not stay in the table forever. On
    PostgreSQL that happens in the same statement, whose insert still sees the
    expired row: the id of an expired message sent again is refused as a
    replay, as the time checks would refuse it.
    """
    connection = session_connection(dbsession, write=True)
    values = {"message_id": message_id[:256], "expires_at": expires_at, "now": now}
    if connection.dialect.name == "postgresql":
        return bool(_FIRST_USE_PG.rows(connection, values))
    _PRUNE.execute(connection, values)
    return bool(_FIRST_USE_SQLITE.rows(connection, values))
