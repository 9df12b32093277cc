"""The SQL implementation of :class:`gateway.scim.storage.ScimStorage`.

Everything runs on ``request.dbsession``, so it commits or aborts with the
request (pyramid_tm). Users and groups are rows whose ``scim_data`` JSON is
the resource as sent; the columns Entra looks things up by are copied out of
it on every write (``user_name_key`` lower-cased for the case-insensitive
unique index). A group's members are rows of ``group_members``: adding 25
members to a group of 50,000 inserts 25 rows and bumps one version.

Speed: the statements an Entra sync runs for every user (the ``userName eq``
lookup, the INSERT) are built once and run through
:class:`gateway.db.prepared.Prepared` on the transaction's connection. A
read in a request that has not opened a transaction (a GET) runs on a
pooled autocommit connection instead of starting one: a single statement
sees committed data either way. A list whose first page holds every match
needs no separate ``count(*)``.

Locking: ``for_update`` reads take a row lock (PostgreSQL ``FOR UPDATE``;
on SQLite a no-op UPDATE that takes the database write lock, since SQLite
has no row locks), so concurrent PATCHes of one resource serialise instead
of losing each other's changes. Uniqueness rests on the unique indexes: a
racing duplicate fails at INSERT and becomes :class:`Conflict`.

A membership change bumps its group's version. On PostgreSQL the statement
that adds or removes the members does it and returns the group's row, which
answers the read that follows (the ETag of Entra's 204) without another
round trip. On SQLite, and for a replace of all members, the bump waits
for the transaction's next read of the group (one ``UPDATE ... RETURNING``
that bumps and reads) or for COMMIT. :class:`_LateBumps` keeps both kinds.
The bump locks the group row until COMMIT; Entra sends several PATCHes to
one group at once, and each waits for the others only from their bumps.
"""

from __future__ import annotations

import contextlib
import functools

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.db.models import Group, GroupMember, User, new_id, utcnow
from gateway.db.prepared import Prepared, session_connection
from gateway.provisioning.profile import SCIM_SYNC_COLUMNS, mapped_profile, profile_columns
from gateway.scim.directory import group_columns, user_columns
from gateway.scim.filters import Compare
from gateway.scim.storage import Conflict, Member, NotFound, Page, Query, Record, ScimStorage, UnknownMembers

from .query import Translator

USER_COLUMNS = (User.id, User.scim_data, User.version, User.created_at, User.updated_at)
GROUP_COLUMNS = (Group.id, Group.scim_data, Group.version, Group.created_at, Group.updated_at)


#: Every column a SCIM create writes, as named bind parameters.
_USER_INSERT_COLUMNS = (
    "id",
    "user_name",
    "user_name_key",
    "external_id",
    "active",
    "display_name",
    "given_name",
    "family_name",
    "email",
    "email_key",
    "title",
    "department",
    "scim_data",
    "attributes",
    "provisioned_by",
    "is_admin",
    "idp_subject",
    "saml_profile",
    "last_sign_in_at",
    "version",
    "created_at",
    "updated_at",
)
_INSERT_USER = Prepared(sa.insert(User).values({c: sa.bindparam(c) for c in _USER_INSERT_COLUMNS}))
_GROUP_INSERT_COLUMNS = (
    "id",
    "display_name",
    "display_name_key",
    "external_id",
    "scim_data",
    "version",
    "created_at",
    "updated_at",
)
_INSERT_GROUP = Prepared(sa.insert(Group).values({c: sa.bindparam(c) for c in _GROUP_INSERT_COLUMNS}))


def _key_lookups(model, columns):
    """Prebuilt (page, count) statements for ``attr eq "value"`` on each indexed key column.

    What Entra sends before every create (``userName eq``, a group's
    ``displayName eq``), and ``externalId``/``id`` lookups.
    """
    keys = {"id": (model.id, False), "externalId": (model.external_id, False)}
    if model is User:
        keys["userName"] = (User.user_name_key, True)
    else:
        keys["displayName"] = (Group.display_name_key, True)
    out = {}
    for name, (column, lowered) in keys.items():
        where = column == sa.bindparam("value", type_=column.type)
        page = (
            sa.select(*columns)
            .where(where)
            .order_by(model.id)
            .limit(sa.bindparam("limit", type_=sa.Integer))
            .offset(sa.bindparam("offset", type_=sa.Integer))
        )
        count = sa.select(sa.func.count()).select_from(model).where(where)
        out[name] = (Prepared(page), Prepared(count), lowered)
    return out


_GET_USER = Prepared(sa.select(*USER_COLUMNS).where(User.id == sa.bindparam("id", type_=User.id.type)))
_GET_GROUP = Prepared(sa.select(*GROUP_COLUMNS).where(Group.id == sa.bindparam("id", type_=Group.id.type)))
_GROUP_EXISTS = Prepared(sa.select(Group.id).where(Group.id == sa.bindparam("id", type_=Group.id.type)))
_KEY_LOOKUPS = {User: _key_lookups(User, USER_COLUMNS), Group: _key_lookups(Group, GROUP_COLUMNS)}


def _locked_reads(model, columns):
    """(no-op UPDATE that takes SQLite's write lock, SELECT ... FOR UPDATE) for ``model``."""
    where = model.id == sa.bindparam("id", type_=model.id.type)
    lock = sa.update(model).where(where).values(version=model.version, updated_at=model.updated_at)
    return Prepared(lock), Prepared(sa.select(*columns).where(where).with_for_update())


_LOCKED_READS = {User: _locked_reads(User, USER_COLUMNS), Group: _locked_reads(Group, GROUP_COLUMNS)}


_BUMP_GROUP = Prepared(
    sa.update(Group)
    .where(Group.id == sa.bindparam("id", type_=Group.id.type))
    .values(version=Group.version + 1, updated_at=sa.bindparam("now", type_=Group.updated_at.type))
    .returning(*GROUP_COLUMNS)
)


class _LateBumps:
    """Group version bumps a transaction owes, or has made, for membership changes.

    Owed (SQLite, and a replace of all members): kept in ``session.info``;
    bumped by the storage when the transaction reads the group, and
    otherwise by the ``before_commit`` listener below (on every
    :class:`~sqlalchemy.orm.Session`, so a session from any factory, or
    none, commits its bumps). Made (PostgreSQL's add and remove, which bump
    in the same statement): the row that statement returned. A transaction
    that rolls back forgets both with its writes.
    """

    KEY = "gateway_sqlstore.late_bumps"

    @classmethod
    def add(cls, dbsession, group_id: str) -> None:
        cls.drop_row(dbsession, group_id)  # a row returned by an earlier bump is not the latest any more
        dbsession.info.setdefault(cls.KEY, set()).add(group_id)

    @classmethod
    def waiting(cls, dbsession, group_id: str) -> bool:
        return group_id in dbsession.info.get(cls.KEY, ())

    @classmethod
    def take(cls, dbsession, group_id: str) -> bool:
        """Whether ``group_id`` was waiting for its bump (it no longer is)."""
        pending = dbsession.info.get(cls.KEY)
        if pending and group_id in pending:
            pending.discard(group_id)
            return True
        return False

    @classmethod
    def bump(cls, dbsession, group_id: str):
        """Bump now; the group's row (GROUP_COLUMNS) after it, or None if it is gone."""
        connection = session_connection(dbsession, write=True)
        rows = _BUMP_GROUP.rows(connection, {"id": group_id, "now": utcnow()})
        return rows[0] if rows else None

    @classmethod
    def bump_all(cls, dbsession) -> None:
        pending = dbsession.info.pop(cls.KEY, None)
        for group_id in sorted(pending or ()):  # one order: two transactions never wait on each other crosswise
            cls.bump(dbsession, group_id)

    # Groups a membership statement bumped itself (PostgreSQL: one statement
    # writes the members and the version), with the row it returned: the
    # read that follows (the PATCH's ETag) is answered from it. The row lock
    # the UPDATE took keeps others from changing the row; this transaction's
    # own writes to it (replace, delete) drop it.
    DONE = "gateway_sqlstore.bumped_rows"

    @classmethod
    def bumped(cls, dbsession, group_id: str, row) -> None:
        """``group_id`` was bumped by a membership statement, which returned ``row``.

        A bump still owed stays owed (a savepoint rolled back would take this
        one with it, and the earlier change would go unbumped); the next read
        makes it, so the row is not kept.
        """
        if not cls.waiting(dbsession, group_id):
            dbsession.info.setdefault(cls.DONE, {})[group_id] = row

    @classmethod
    def bumped_row(cls, dbsession, group_id: str):
        return dbsession.info.get(cls.DONE, {}).get(group_id)

    @classmethod
    def drop_row(cls, dbsession, group_id: str) -> None:
        dbsession.info.get(cls.DONE, {}).pop(group_id, None)

    @classmethod
    def forget(cls, dbsession, transaction) -> None:
        # Any end (a savepoint's too: its rollback would undo a bump) drops
        # the rows; only the root transaction's drops the bumps owed.
        dbsession.info.pop(cls.DONE, None)
        if transaction.parent is None:
            dbsession.info.pop(cls.KEY, None)


event.listen(Session, "before_commit", _LateBumps.bump_all)
event.listen(Session, "after_transaction_end", _LateBumps.forget)


class _PaddedIdLists:
    """Membership statements over a list of user ids, for SQLite.

    Entra adds and removes members a few at a time. A list of N ids runs as
    the statement for the next size up in ``SIZES``, padded by repeating an
    id (harmless in IN lists and in an INSERT ... ON CONFLICT DO NOTHING), so
    a handful of statements serve every list, and the small ones are
    compiled when the storage starts, not by the first PATCH.
    """

    SIZES = (1, 4, 16, 64, 256, 500)
    CHUNK = SIZES[-1]

    @classmethod
    def _size(cls, count: int) -> int:
        return next(size for size in cls.SIZES if size >= count)

    @classmethod
    def _numbered(cls, ids: list[str]) -> dict[str, str]:
        padded = ids + [ids[0]] * (cls._size(len(ids)) - len(ids))
        return {f"u{i}": value for i, value in enumerate(padded)}

    @staticmethod
    def _id_list(count: int):
        return [sa.bindparam(f"u{i}", type_=User.id.type) for i in range(count)]

    @classmethod
    @functools.lru_cache(maxsize=16)
    def _existing(cls, count: int) -> Prepared:
        return Prepared(sa.select(User.id).where(User.id.in_(cls._id_list(count))))

    @classmethod
    @functools.lru_cache(maxsize=16)
    def _insert(cls, count: int) -> Prepared:
        group_id = sa.bindparam("group_id", type_=GroupMember.group_id.type)
        now = sa.bindparam("now", type_=GroupMember.created_at.type)
        rows = [{"group_id": group_id, "user_id": user_id, "created_at": now} for user_id in cls._id_list(count)]
        return Prepared(sqlite.insert(GroupMember).values(rows).on_conflict_do_nothing().returning(GroupMember.user_id))

    @classmethod
    @functools.lru_cache(maxsize=16)
    def _delete(cls, count: int) -> Prepared:
        return Prepared(
            sa.delete(GroupMember)
            .where(GroupMember.group_id == sa.bindparam("group_id", type_=GroupMember.group_id.type))
            .where(GroupMember.user_id.in_(cls._id_list(count)))
            .returning(GroupMember.user_id)
        )

    def _run(self, make, connection, ids: list[str], **values) -> list[str]:
        out = []
        for start in range(0, len(ids), self.CHUNK):
            chunk = ids[start : start + self.CHUNK]
            out += [
                row[0] for row in make(self._size(len(chunk))).rows(connection, {**values, **self._numbered(chunk)})
            ]
        return out

    def existing(self, connection, ids: list[str]) -> list[str]:
        return self._run(self._existing, connection, ids)

    def insert(self, connection, group_id: str, ids: list[str], now) -> list[str]:
        return self._run(self._insert, connection, ids, group_id=group_id, now=now)

    def delete(self, connection, group_id: str, ids: list[str]) -> list[str]:
        return self._run(self._delete, connection, ids, group_id=group_id)

    def add_if_all_exist(self, connection, group_id: str, ids: list[str], now, bump: bool):
        """(group exists, ids that are users, ids added, None): see :class:`_ArrayIdLists`."""
        if not _GROUP_EXISTS.rows(connection, {"id": group_id}):
            return False, [], [], None
        found = self.existing(connection, ids)
        if len(set(found)) < len(ids):
            return True, found, [], None
        return True, found, self.insert(connection, group_id, ids, now), None

    def remove(self, connection, group_id: str, ids: list[str], now, bump: bool):
        """(ids removed, None)."""
        return self.delete(connection, group_id, ids), None

    def statements(self) -> list[Prepared]:
        return [make(size) for size in self.SIZES[:3] for make in (self._existing, self._insert, self._delete)]


class _ArrayIdLists:
    """Membership statements over a list of user ids, for PostgreSQL: the
    list is one array parameter (``= ANY(:ids)``, ``cardinality(:ids)``).

    One statement serves every length, and its plan probes the primary key.
    With one parameter per id, the generic plan PostgreSQL switches to after
    five runs (when the tables have not been analyzed yet, as in a first
    sync) scanned the whole users table to check 25 ids: 14 ms at 10,000
    users, growing with every user.
    """

    # VARCHAR[] without the column's length: a cast to VARCHAR(36)[] would
    # cut a longer (so unknown) id down to a real one.
    _IDS = sa.bindparam("ids", type_=postgresql.ARRAY(sa.String()))
    _GROUP_ID = sa.bindparam("group_id", type_=GroupMember.group_id.type)
    _PARAMS = (
        _IDS,
        _GROUP_ID,
        sa.bindparam("now", type_=GroupMember.created_at.type),
        sa.bindparam("bump", type_=sa.Boolean()),
    )
    _GROUP_ROW = [sa.column(c.key, c.type) for c in GROUP_COLUMNS]

    # When ``:bump`` is true and the statement changed a row, it bumps the
    # group's version too and returns the group's row (GROUP_COLUMNS, else
    # NULLs): the PATCH's ETag without another round trip.
    _BUMPED = (
        f"bumped AS (UPDATE {Group.__tablename__} SET version = version + 1, updated_at = :now "
        "WHERE id = :group_id AND :bump AND EXISTS (SELECT 1 FROM changed) "
        f"RETURNING {', '.join(c.key for c in GROUP_COLUMNS)})"
    )
    _WITH_ROW = " FROM (SELECT 1) AS one LEFT JOIN bumped ON true"

    DELETE = Prepared(
        sa.text(
            f"WITH changed AS (DELETE FROM {GroupMember.__tablename__} "
            "WHERE group_id = :group_id AND user_id = ANY(:ids) RETURNING user_id), "
            + _BUMPED
            + " SELECT (SELECT array_agg(user_id) FROM changed) AS removed, bumped.*"
            + _WITH_ROW
        )
        .bindparams(*_PARAMS)
        .columns(sa.column("removed", postgresql.ARRAY(sa.String())), *_GROUP_ROW)
    )

    # Check and insert in one round trip: the rows go in only if the group
    # exists and every id is a user.
    ADD_IF_ALL_EXIST = Prepared(
        sa.text(
            f"WITH grp AS (SELECT id FROM {Group.__tablename__} WHERE id = :group_id), "
            f"found AS (SELECT id FROM {User.__tablename__} WHERE id = ANY(:ids)), "
            f"changed AS (INSERT INTO {GroupMember.__tablename__} (group_id, user_id, created_at) "
            "SELECT grp.id, found.id, :now FROM grp, found WHERE (SELECT count(*) FROM found) = cardinality(:ids) "
            "ON CONFLICT DO NOTHING RETURNING user_id), "
            + _BUMPED
            + " SELECT EXISTS (SELECT 1 FROM grp) AS group_found, "
            "(SELECT array_agg(id) FROM found) AS found, (SELECT array_agg(user_id) FROM changed) AS added, bumped.*"
            + _WITH_ROW
        )
        .bindparams(*_PARAMS)
        .columns(
            sa.column("group_found", sa.Boolean()),
            sa.column("found", postgresql.ARRAY(sa.String())),
            sa.column("added", postgresql.ARRAY(sa.String())),
            *_GROUP_ROW,
        )
    )

    @staticmethod
    def _bumped_row(row):
        return row if row.id is not None else None

    def add_if_all_exist(self, connection, group_id: str, ids: list[str], now, bump: bool):
        """(whether the group exists, ids that are users, ids added, the
        group's row if ``bump`` and some were added): nothing is added unless
        the group exists and every id is a user."""
        row = self.ADD_IF_ALL_EXIST.rows(connection, {"ids": ids, "group_id": group_id, "now": now, "bump": bump})[0]
        return bool(row.group_found), list(row.found or ()), list(row.added or ()), self._bumped_row(row)

    def remove(self, connection, group_id: str, ids: list[str], now, bump: bool):
        """(ids removed, the group's row if ``bump`` and some were removed)."""
        row = self.DELETE.rows(connection, {"ids": ids, "group_id": group_id, "now": now, "bump": bump})[0]
        return list(row.removed or ()), self._bumped_row(row)

    def delete(self, connection, group_id: str, ids: list[str]) -> list[str]:
        return self.remove(connection, group_id, ids, utcnow(), False)[0]

    def statements(self) -> list[Prepared]:
        return [self.ADD_IF_ALL_EXIST, self.DELETE]


def _record(row, members=None) -> Record:
    return Record(
        id=row.id,
        data=dict(row.scim_data or {}),
        version=row.version,
        created=row.created_at,
        last_modified=row.updated_at,
        members=members,
    )


class SqlStorage(ScimStorage):
    #: Users and groups are the core's own ``users``, ``groups`` and
    #: ``group_members`` rows: no mirror needed (gateway.scim.directory).
    keeps_directory = True
    #: GETs read on a pooled autocommit connection (``_reading``), so
    #: ``gateway.db.needs_transaction`` skips pyramid_tm for SCIM GET/HEAD.
    reads_without_transaction = True

    def __init__(self, registry):
        from gateway.db.prepared import read_engine

        self.registry = registry
        self.dialect = registry.db_engine.dialect.name
        reader = getattr(registry, "db_read_engine", None)
        if reader is None:
            reader = registry.db_read_engine = read_engine(registry.gateway_settings.database_url)
        self.read_engine = reader
        self.id_lists = _ArrayIdLists() if self.dialect == "postgresql" else _PaddedIdLists()
        self._compile_hot_statements(registry.db_engine.dialect)

    def _compile_hot_statements(self, dialect) -> None:
        """Compile now what an Entra sync runs, so its first requests do not."""
        statements = [
            _INSERT_USER,
            _INSERT_GROUP,
            _GET_USER,
            _GET_GROUP,
            _GROUP_EXISTS,
            _BUMP_GROUP,
            *_LOCKED_READS[User],
            *_LOCKED_READS[Group],
        ]
        for lookups in _KEY_LOOKUPS.values():
            for page, count, _lowered in lookups.values():
                statements += [page, count]
        statements += self.id_lists.statements()
        for statement in statements:
            statement.compiled(dialect)

    @staticmethod
    def _transaction_session(request):
        """The request's session if the request has one (its reads must see its writes), else None."""
        if "dbsession" in request.__dict__ or "app.dbsession" in getattr(request, "environ", ()):
            return request.dbsession
        return None

    @contextlib.contextmanager
    def _reading(self, request):
        """The connection a read runs on: the request's transaction when it
        has one, else a pooled autocommit one."""
        dbsession = self._transaction_session(request)
        if dbsession is not None:
            yield dbsession.connection()
        else:
            with self.read_engine.connect() as connection:
                yield connection

    def _insert(self, model):
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(model)

    def _locked_row(self, dbsession, model, resource_id: str):
        """The row of ``resource_id``, locked until the transaction ends (None if absent)."""
        if model is Group and _LateBumps.take(dbsession, resource_id):
            return _LateBumps.bump(dbsession, resource_id)  # the bump's UPDATE took the lock
        lock, read = _LOCKED_READS[model]
        connection = session_connection(dbsession, write=self.dialect == "sqlite")
        if self.dialect == "sqlite":
            # SQLite locks the whole database for writing; a no-op UPDATE takes
            # that lock now, before the read. PostgreSQL: SELECT ... FOR UPDATE.
            lock.execute(connection, {"id": resource_id})
        rows = read.rows(connection, {"id": resource_id})
        return rows[0] if rows else None

    # ---------------------------------------------------------------- users

    def create_user(self, request, data: dict) -> Record:
        now = utcnow()
        values = {"id": new_id(), **user_columns(data), "version": 1, "created_at": now, "updated_at": now}
        values.update(
            provisioned_by="scim",
            is_admin=False,
            attributes={},
            idp_subject=None,
            saml_profile=None,
            last_sign_in_at=None,
        )
        # The profile columns as provisioning maps them for a new SCIM user (no
        # SAML profile yet), so its sync after this INSERT has nothing to
        # read or write: one statement where there were three.
        values.update(
            profile_columns(
                mapped_profile(
                    request.registry,
                    provisioned_by="scim",
                    scim_data=data,
                    saml_profile=None,
                    source="scim",
                    context_fields={"subject": None},
                )
            )
        )
        try:
            _INSERT_USER.execute(session_connection(request.dbsession, write=True), values)
        except sa.exc.IntegrityError as exc:
            raise Conflict(f'userName "{data["userName"]}" is taken') from exc
        return Record(values["id"], data, 1, now, now, stored_profile={k: values[k] for k in SCIM_SYNC_COLUMNS})

    def get_user(self, request, user_id: str, *, for_update: bool = False) -> Record | None:
        if for_update:
            row = self._locked_row(request.dbsession, User, user_id)
        else:
            with self._reading(request) as connection:
                rows = _GET_USER.rows(connection, {"id": user_id})
            row = rows[0] if rows else None
        return _record(row) if row else None

    def replace_user(self, request, user_id: str, data: dict) -> Record:
        stmt = (
            sa.update(User)
            .where(User.id == user_id)
            .values(**user_columns(data), version=User.version + 1, updated_at=utcnow())
            .returning(*USER_COLUMNS)
        )
        try:
            row = request.dbsession.execute(stmt, execution_options={"synchronize_session": False}).first()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f'userName "{data["userName"]}" is taken') from exc
        return _record(row)

    def delete_user(self, request, user_id: str) -> bool:
        dbsession = request.dbsession
        # The user's groups change too: their ETags must move.
        dbsession.execute(
            sa.update(Group)
            .where(Group.id.in_(sa.select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
            .values(version=Group.version + 1, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        # Memberships and sessions go with the row (ON DELETE CASCADE).
        result = dbsession.execute(
            sa.delete(User).where(User.id == user_id), execution_options={"synchronize_session": False}
        )
        return bool(result.rowcount)

    def query_users(self, request, query: Query) -> Page:
        return self._query(request, User, USER_COLUMNS, query, members=False)

    # ---------------------------------------------------------------- groups

    def create_group(self, request, data: dict, member_ids: list[str]) -> Record:
        now = utcnow()
        group_id = new_id()
        values = {"id": group_id, **group_columns(data), "version": 1, "created_at": now, "updated_at": now}
        try:
            _INSERT_GROUP.execute(session_connection(request.dbsession, write=True), values)
        except sa.exc.IntegrityError as exc:
            raise Conflict(f'a group named "{data["displayName"]}" exists') from exc
        added = self._insert_members(request.dbsession, group_id, member_ids) if member_ids else []
        # As a read would list them: by when they joined (all now), then by id.
        return Record(group_id, data, 1, now, now, members=[Member(u) for u in sorted(added)])

    def get_group(self, request, group_id: str, *, with_members: bool = True, for_update: bool = False):
        dbsession = request.dbsession if for_update else self._transaction_session(request)
        row = dbsession is not None and _LateBumps.bumped_row(dbsession, group_id)
        if row:
            # Bumped by this transaction's membership statement, which returned
            # the row and still holds its lock: the row as it is now.
            members = self._members(dbsession, [group_id])[group_id] if with_members else None
            return _record(row, members)
        if dbsession is not None and (for_update or _LateBumps.waiting(dbsession, group_id)):
            # A locked read; a version bump still owed is that read (its UPDATE takes the lock).
            row = self._locked_row(dbsession, Group, group_id)
            if row is None:
                return None
            members = self._members(dbsession, [group_id])[group_id] if with_members else None
            return _record(row, members)
        with self._reading(request) as connection:
            rows = _GET_GROUP.rows(connection, {"id": group_id})
            if not rows:
                return None
            members = self._members(connection, [group_id])[group_id] if with_members else None
        return _record(rows[0], members)

    def replace_group(self, request, group_id: str, data: dict) -> Record:
        _LateBumps.take(request.dbsession, group_id)  # this UPDATE bumps the version
        _LateBumps.drop_row(request.dbsession, group_id)
        stmt = (
            sa.update(Group)
            .where(Group.id == group_id)
            .values(**group_columns(data), version=Group.version + 1, updated_at=utcnow())
            .returning(*GROUP_COLUMNS)
        )
        try:
            row = request.dbsession.execute(stmt, execution_options={"synchronize_session": False}).first()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f'a group named "{data["displayName"]}" exists') from exc
        return _record(row)

    def delete_group(self, request, group_id: str) -> bool:
        _LateBumps.take(request.dbsession, group_id)
        _LateBumps.drop_row(request.dbsession, group_id)
        result = request.dbsession.execute(
            sa.delete(Group).where(Group.id == group_id), execution_options={"synchronize_session": False}
        )
        return bool(result.rowcount)

    def query_groups(self, request, query: Query) -> Page:
        return self._query(request, Group, GROUP_COLUMNS, query, members=query.with_members)

    # ---------------------------------------------------------------- membership

    def _insert_members(self, dbsession, group_id: str, user_ids: list[str], bump: bool = False) -> list[str]:
        """Add the members, all or none; with ``bump``, the version too (see :meth:`_bumped`)."""
        user_ids = list(dict.fromkeys(user_ids))
        connection = session_connection(dbsession, write=True)
        group_found, found, added, row = self.id_lists.add_if_all_exist(connection, group_id, user_ids, utcnow(), bump)
        if not group_found:
            raise NotFound(f"Group {group_id} not found")
        missing = set(user_ids) - set(found)
        if missing:
            raise UnknownMembers(missing)
        if bump and added:
            self._bumped(dbsession, group_id, row)
        return added

    @staticmethod
    def _bumped(dbsession, group_id: str, row) -> None:
        """A membership statement changed rows: on PostgreSQL it bumped the
        version itself and returned the group's ``row``; SQLite owes the bump."""
        if row is not None:
            _LateBumps.bumped(dbsession, group_id, row)
        else:
            _LateBumps.add(dbsession, group_id)

    def add_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        return self._insert_members(request.dbsession, group_id, user_ids, bump=True)

    def remove_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        connection = session_connection(request.dbsession, write=True)
        removed, row = self.id_lists.remove(connection, group_id, list(dict.fromkeys(user_ids)), utcnow(), True)
        if removed:
            self._bumped(request.dbsession, group_id, row)
        return removed

    def set_members(self, request, group_id: str, user_ids: list[str]) -> None:
        dbsession = request.dbsession
        wanted = list(dict.fromkeys(user_ids))
        current = set(dbsession.scalars(sa.select(GroupMember.user_id).where(GroupMember.group_id == group_id)))
        # Additions first: an unknown id (never a current member) is refused
        # before anything is written.
        new = [u for u in wanted if u not in current]
        if new:
            self._insert_members(dbsession, group_id, new)
        keep = set(wanted)
        gone = [u for u in current if u not in keep]
        if gone:
            self.id_lists.delete(session_connection(dbsession, write=True), group_id, gone)
        _LateBumps.add(dbsession, group_id)

    def count_members(self, request, group_id: str) -> int:
        return request.dbsession.scalar(
            sa.select(sa.func.count()).select_from(GroupMember).where(GroupMember.group_id == group_id)
        )

    # ---------------------------------------------------------------- queries

    def _members(self, dbsession, group_ids: list[str]) -> dict[str, list[Member]]:
        out: dict[str, list[Member]] = {g: [] for g in group_ids}
        if not group_ids:
            return out
        stmt = (
            sa.select(GroupMember.group_id, GroupMember.user_id)
            .where(GroupMember.group_id.in_(group_ids))
            .order_by(GroupMember.group_id, GroupMember.created_at, GroupMember.user_id)
        )
        for group_id, user_id in dbsession.execute(stmt):
            out[group_id].append(Member(user_id))
        return out

    def _key_lookup(self, model, query: Query):
        """The prebuilt statements for ``query`` when it is one equality on a key column, else None."""
        expr = query.filter
        if not isinstance(expr, Compare) or expr.op != "eq" or query.sort_by is not None:
            return None
        path = expr.path
        if path.urn is not None or path.sub is not None or not isinstance(expr.value, str):
            return None
        found = _KEY_LOOKUPS[model].get(path.attribute.name)
        if found is None:
            return None
        page, count, lowered = found
        return page, count, (expr.value.lower() if lowered else expr.value)

    def _query(self, request, model, columns, query: Query, members: bool) -> Page:
        dbsession = self._transaction_session(request)
        if model is Group and dbsession is not None:
            _LateBumps.bump_all(dbsession)  # the versions listed must be this transaction's
        with self._reading(request) as connection:
            lookup = self._key_lookup(model, query) if not query.descending else None
            if lookup is not None:
                page_stmt, count_stmt, value = lookup
                rows = []
                if query.count > 0:
                    rows = page_stmt.rows(
                        connection, {"value": value, "limit": query.count, "offset": query.start_index - 1}
                    )
                if query.start_index == 1 and len(rows) < query.count:
                    total = len(rows)  # the whole result is on this page
                else:
                    total = count_stmt.rows(connection, {"value": value})[0][0]
            else:
                translator = Translator(self.dialect, model)
                where = translator.where(query.filter) if query.filter is not None else sa.true()
                order = translator.order(query.sort_by, query.descending)
                rows = []
                if query.count > 0:
                    stmt = (
                        sa.select(*columns)
                        .where(where)
                        .order_by(*order)
                        .offset(query.start_index - 1)
                        .limit(query.count)
                    )
                    rows = connection.execute(stmt).all()
                if query.start_index == 1 and len(rows) < query.count:
                    total = len(rows)  # the whole result is on this page
                else:
                    total = connection.scalar(sa.select(sa.func.count()).select_from(model).where(where))
            if not rows:
                return Page(total=total)
            by_group = self._members(connection, [r.id for r in rows]) if members else {}
        return Page(total=total, resources=[_record(r, by_group.get(r.id) if members else None) for r in rows])
