"""The console's user search: prefix matches on indexed keys, one page at a time.

``q`` matches the start of the userName, the email or the display name
(case-insensitively; the last two from :data:`SECONDARY_MIN` characters),
or exactly an external id, IdP subject or user id.
Results are ordered by userName and paged by keyset (the last userName of
the page), so a page costs the same at 100,000 users as at 100, and no
query scans the table (bench/admin_users.py measures it).

The prefix is a range on the key, ``key >= q AND key < q || U+10FFFF``,
compared byte by byte: SQLite's default (BINARY) collation does that, and
on PostgreSQL the comparisons and the order are ``COLLATE "C"``, served by
the ``COLLATE "C"`` indexes of migration 0010 (a btree in the database's
own collation can serve neither a prefix range nor its order). SQLite's
``lower()`` folds ASCII letters only, so there a display name with an
accented capital is found by its exact case.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..db.models import User

PAGE_SIZE = 50
#: Sorts after every other character, so ``q + TOP`` bounds every string starting with q.
TOP = "\U0010ffff"
SOURCES = ("scim", "saml")
#: The email and display name are searched from this many characters on.
#: Their matches are sorted by userName, so their cost grows with how many
#: people a prefix matches: one or two letters match a tenth of a directory
#: (the userName, whose index gives the order, is searched from one).
SECONDARY_MIN = 3


@dataclass(frozen=True)
class UserPage:
    users: list
    #: The keyset cursor of the next page, or None on the last page.
    next_after: str | None


def _bytewise(column, dialect: str):
    return column.collate("C") if dialect == "postgresql" else column


def display_name_key():
    """The expression the display-name index is on (migration 0010)."""
    return sa.func.lower(User.display_name)


def search_users(
    dbsession,
    q: str = "",
    *,
    state: str = "",
    source: str = "",
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> UserPage:
    """One page of users matching ``q``, ``state`` (active/inactive) and ``source`` (scim/saml)."""
    dialect = dbsession.get_bind().dialect.name
    order_key = _bytewise(User.user_name_key, dialect)
    where = []
    if state in ("active", "inactive"):
        where.append(User.active.is_(state == "active"))
    if source in SOURCES:
        where.append(User.provisioned_by == source)
    if after:
        where.append(order_key > after)
    q = q.strip()
    if q:
        where = [User.user_name_key.in_(_matching_keys(q, where, limit + 1, dialect))]
    rows = dbsession.execute(sa.select(*COLUMNS).where(*where).order_by(order_key).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return UserPage(rows, rows[-1].user_name_key if more and rows else None)


COLUMNS = (
    User.id,
    User.user_name,
    User.user_name_key,
    User.display_name,
    User.email,
    User.active,
    User.provisioned_by,
    User.is_admin,
    User.last_sign_in_at,
)


def _matching_keys(q: str, where: list, limit: int, dialect: str):
    """The userNames of the first ``limit`` matches of each key, as a subquery.

    One branch per key, each ordered by userName and cut at ``limit``, so
    the first page of their union is the first page of the matches. The
    userName branch walks its own index in order and stops. The email and
    display-name branches read their matches from their own index (a
    covering one on PostgreSQL: no table reads) and sort them; without the
    MATERIALIZED barrier PostgreSQL would rather walk the userName index from
    the start and filter, which takes half the table when a prefix ("m")
    matches many people whose userName starts the same way.
    """
    low, high = q.lower(), q.lower() + TOP

    def in_range(expression):
        expression = _bytewise(expression, dialect)
        return sa.and_(expression >= low, expression < high)

    order_key = _bytewise(User.user_name_key, dialect)
    branches = [
        sa.select(User.user_name_key.label("key"))
        .where(in_range(User.user_name_key), *where)
        .order_by(order_key)
        .limit(limit)
    ]
    secondary = (
        (("email_matches", User.email_key), ("name_matches", display_name_key())) if len(q) >= SECONDARY_MIN else ()
    )
    for name, expression in secondary:
        matches = sa.select(User.user_name_key.label("key")).where(in_range(expression), *where).cte(name)
        if dialect == "postgresql":
            matches = matches.prefix_with("MATERIALIZED")
        branches.append(sa.select(matches.c.key).order_by(_bytewise(matches.c.key, dialect)).limit(limit))
    exact = [User.external_id == q, User.idp_subject == q]
    if len(q) == 36:
        exact.append(User.id == q.lower())
    branches.append(sa.select(User.user_name_key.label("key")).where(sa.or_(*exact), *where))
    union = sa.union(*(sa.select(branch.subquery().c.key) for branch in branches)).subquery("matching")
    return sa.select(union.c.key)
