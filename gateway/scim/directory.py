"""The core's directory kept in step with a SCIM backend that stores its data elsewhere.

The core acts on its own tables (``users``, ``groups``, ``group_members``:
see :mod:`gateway.scim.storage` for who owns what). A backend that writes
them itself declares ``keeps_directory`` (the shipped ``sqlstore``); any
other is wrapped by :class:`DirectoryMirror`, which forwards every
:class:`~gateway.scim.storage.ScimStorage` call and mirrors the outcome of
each write into the core's tables on ``request.dbsession``, in the same
transaction, under the backend's ids. So sign-in linking, deactivation,
forward-auth's groups and the console work whatever the backend.

The other direction, a change the core makes that the SCIM view must show,
goes through :func:`create_user_in_backend` (a user created at a first
sign-in) and :func:`set_active_in_backend` (the console's (de)activation of
such a user): with ``sqlstore`` the core's row is the backend's, so both do
nothing.

:func:`user_columns` and :func:`group_columns` are the one definition of the
columns a SCIM document fills, shared with ``sqlstore``.
"""

from __future__ import annotations

import sqlalchemy as sa
import zope.sqlalchemy
from sqlalchemy.dialects import postgresql, sqlite

from ..db.models import Group, GroupMember, User
from .schemas import ENTERPRISE_USER
from .storage import Conflict, Page, Query, Record, ScimStorage

NO_WRITE_BACK = {"synchronize_session": False}


def _short(value, length: int):
    return value[:length] if isinstance(value, str) else None


def _work_email(data: dict) -> str | None:
    emails = [e for e in data.get("emails") or [] if isinstance(e, dict) and isinstance(e.get("value"), str)]
    for wanted in (lambda e: str(e.get("type", "")).lower() == "work", lambda e: e.get("primary") is True):
        for email in emails:
            if wanted(email):
                return email["value"]
    return emails[0]["value"] if emails else None


def user_columns(data: dict) -> dict:
    """The ``users`` columns a SCIM user document fills, copied from it on every write."""
    name = data.get("name") or {}
    enterprise = data.get(ENTERPRISE_USER) or {}
    email = _work_email(data)
    user_name = data["userName"]
    return {
        "user_name": user_name,
        "user_name_key": user_name.lower(),
        "external_id": data.get("externalId"),
        "active": data.get("active", True) is not False,
        "display_name": _short(data.get("displayName"), 512),
        "given_name": _short(name.get("givenName"), 256),
        "family_name": _short(name.get("familyName"), 256),
        "email": _short(email, 320),
        "email_key": _short(email.lower() if email else None, 320),
        "title": _short(data.get("title"), 256),
        "department": _short(enterprise.get("department"), 256),
        "scim_data": data,
    }


def group_columns(data: dict) -> dict:
    """The ``groups`` columns a SCIM group document fills."""
    return {
        "display_name": data["displayName"],
        "display_name_key": data["displayName"].lower(),
        "external_id": data.get("externalId"),
        "scim_data": data,
    }


def directory_storage(backend: ScimStorage) -> ScimStorage:
    """The storage the SCIM core calls: ``backend`` itself when it keeps the
    directory, else ``backend`` wrapped in a :class:`DirectoryMirror`."""
    return backend if backend.keeps_directory else DirectoryMirror(backend)


class DirectoryMirror(ScimStorage):
    """``backend``'s answers, with each write's outcome copied into the core's tables.

    Reads go to the backend alone. A write runs on the backend first (its
    errors, ids and versions are the answer), then on the core's rows; a
    unique index of the core refusing the copy (a userName the core already
    has) is a :class:`Conflict` like the backend's own.
    """

    keeps_directory = True

    def __init__(self, backend: ScimStorage):
        self.backend = backend
        self.reads_without_transaction = backend.reads_without_transaction

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _execute(request, statement, conflict: str | None = None):
        dbsession = request.dbsession
        try:
            result = dbsession.execute(statement, execution_options=NO_WRITE_BACK)
        except sa.exc.IntegrityError as exc:
            if conflict is None:
                raise
            raise Conflict(conflict) from exc
        zope.sqlalchemy.mark_changed(dbsession)
        return result

    @staticmethod
    def _insert(request, model):
        dialect = request.dbsession.get_bind().dialect.name
        return (postgresql if dialect == "postgresql" else sqlite).insert(model)

    def _add_rows(self, request, group_id: str, user_ids) -> None:
        rows = [{"group_id": group_id, "user_id": u} for u in dict.fromkeys(user_ids)]
        if rows:
            self._execute(request, self._insert(request, GroupMember).values(rows).on_conflict_do_nothing())

    def _remove_rows(self, request, group_id: str, user_ids) -> None:
        if user_ids:
            self._execute(
                request,
                sa.delete(GroupMember).where(GroupMember.group_id == group_id, GroupMember.user_id.in_(list(user_ids))),
            )

    # ---------------------------------------------------------------- users

    def create_user(self, request, data: dict) -> Record:
        record = self.backend.create_user(request, data)
        values = {
            "id": record.id,
            **user_columns(data),
            "version": record.version,
            "created_at": record.created,
            "updated_at": record.last_modified,
            "provisioned_by": "scim",
            "is_admin": False,
            "attributes": {},
        }
        self._execute(request, sa.insert(User).values(values), f'userName "{data["userName"]}" is taken')
        return record

    def get_user(self, request, user_id: str, *, for_update: bool = False) -> Record | None:
        return self.backend.get_user(request, user_id, for_update=for_update)

    def replace_user(self, request, user_id: str, data: dict) -> Record:
        record = self.backend.replace_user(request, user_id, data)
        self._execute(
            request,
            sa.update(User)
            .where(User.id == user_id)
            .values(**user_columns(data), version=record.version, updated_at=record.last_modified),
            f'userName "{data["userName"]}" is taken',
        )
        return record

    def delete_user(self, request, user_id: str) -> bool:
        deleted = self.backend.delete_user(request, user_id)
        # Memberships and sessions go with the row (ON DELETE CASCADE).
        self._execute(request, sa.delete(User).where(User.id == user_id))
        return deleted

    def query_users(self, request, query: Query) -> Page:
        return self.backend.query_users(request, query)

    # ---------------------------------------------------------------- groups

    def create_group(self, request, data: dict, member_ids: list[str]) -> Record:
        record = self.backend.create_group(request, data, member_ids)
        values = {
            "id": record.id,
            **group_columns(data),
            "version": record.version,
            "created_at": record.created,
            "updated_at": record.last_modified,
        }
        self._execute(request, sa.insert(Group).values(values), f'a group named "{data["displayName"]}" exists')
        self._add_rows(request, record.id, member_ids if record.members is None else [m.value for m in record.members])
        return record

    def get_group(self, request, group_id: str, *, with_members: bool = True, for_update: bool = False):
        return self.backend.get_group(request, group_id, with_members=with_members, for_update=for_update)

    def replace_group(self, request, group_id: str, data: dict) -> Record:
        record = self.backend.replace_group(request, group_id, data)
        self._execute(
            request,
            sa.update(Group)
            .where(Group.id == group_id)
            .values(**group_columns(data), version=record.version, updated_at=record.last_modified),
            f'a group named "{data["displayName"]}" exists',
        )
        return record

    def delete_group(self, request, group_id: str) -> bool:
        deleted = self.backend.delete_group(request, group_id)
        self._execute(request, sa.delete(Group).where(Group.id == group_id))
        return deleted

    def query_groups(self, request, query: Query) -> Page:
        return self.backend.query_groups(request, query)

    # ---------------------------------------------------------------- membership

    def add_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        added = self.backend.add_members(request, group_id, user_ids)
        self._add_rows(request, group_id, added)
        return added

    def remove_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        removed = self.backend.remove_members(request, group_id, user_ids)
        self._remove_rows(request, group_id, removed)
        return removed

    def set_members(self, request, group_id: str, user_ids: list[str]) -> None:
        self.backend.set_members(request, group_id, user_ids)
        wanted = set(user_ids)
        current = set(request.dbsession.scalars(sa.select(GroupMember.user_id).where(GroupMember.group_id == group_id)))
        self._remove_rows(request, group_id, current - wanted)
        self._add_rows(request, group_id, [u for u in user_ids if u not in current])

    def count_members(self, request, group_id: str) -> int:
        return self.backend.count_members(request, group_id)


# ---------------------------------------------------------------- the core's changes


def _mirror(request) -> DirectoryMirror | None:
    storage = getattr(request.registry, "scim_storage", None)
    return storage if isinstance(storage, DirectoryMirror) else None


def create_user_in_backend(request, data: dict) -> str | None:
    """For a user the core creates (a first sign-in): the id the backend gave
    it, or None when the core's row is all there is to write (no SCIM, or a
    backend that keeps the directory). The backend's :class:`Conflict`
    propagates: the core's tables and the backend disagree on who exists."""
    mirror = _mirror(request)
    if mirror is None:
        return None
    return mirror.backend.create_user(request, data).id


def set_active_in_backend(request, user_id: str, active: bool) -> None:
    """The console (de)activated a user: the backend's document says the same."""
    mirror = _mirror(request)
    if mirror is None:
        return
    record = mirror.backend.get_user(request, user_id, for_update=True)
    if record is not None and (record.data.get("active", True) is not False) != active:
        mirror.backend.replace_user(request, user_id, {**record.data, "active": active})
