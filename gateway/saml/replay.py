"""The replay cache shared by every instance: a SAML message ID is accepted once.

Signed sign-in assertions and signed LogoutRequests are both bearer
messages: whoever captured one could send it again. Their IDs go into one
table (``seen_assertions``; IDs are unique across message kinds) until the
message would expire anyway, and a second use of an ID is refused.
"""

from __future__ import annotations

import sqlalchemy as sa
import zope.sqlalchemy
from sqlalchemy.dialects import postgresql, sqlite

from ..db.models import SeenAssertion


def first_use(dbsession, message_id: str, expires_at, now) -> bool:
    """Record ``message_id`` until ``expires_at``; False if it was already recorded.

    Expired ids are dropped on the way, so that an id past its expiry (refused
    anyway by the time checks) does not stay in the table forever. On
    PostgreSQL that happens in the same statement (one round trip on the
    sign-in's hot path), whose insert still sees the expired row: the id of an
    expired message sent again is refused as a replay, as the time checks
    would refuse it.
    """
    table = SeenAssertion.__table__
    expired = sa.delete(table).where(table.c.expires_at <= now)
    dialect = dbsession.get_bind().dialect.name
    insert = (
        (postgresql if dialect == "postgresql" else sqlite)
        .insert(table)
        .values(assertion_id=message_id[:256], expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(table.c.assertion_id)
    )
    if dialect == "postgresql":
        insert = insert.add_cte(expired.cte("expired"))
    else:
        dbsession.execute(expired)
    inserted = dbsession.execute(insert).first()
    zope.sqlalchemy.mark_changed(dbsession)
    return inserted is not None
