"""The in-memory implementation of :class:`gateway.scim.storage.ScimStorage`.

State is a set of dicts held by the storage object: documents by id, the
lower-cased userName and displayName indexes that make them unique, and
each group's members (user id -> the order they joined in). Entries are
never changed in place: a write replaces them, so a transaction's working
copy is a shallow copy of each dict.

Transactions: the first write of a request (or a ``for_update`` read) joins
the request's transaction (``request.tm``) as a data manager through the
``transaction`` package's public interface, takes the store's write lock and
works on a copy of the committed state; ``tpc_finish`` (after every other
resource, the SQL session among them, has voted and committed) makes the
copy the committed state, and ``abort``/``tpc_abort`` drop it. Writers thus
run one after another, as SQLite's do, and a rolled-back or retried request
leaves nothing behind. Reads outside a write see the committed state: no
transaction needed (``reads_without_transaction``).
"""

from __future__ import annotations

import copy
import threading
import uuid
from dataclasses import dataclass

import transaction.interfaces
from zope.interface import implementer

from gateway.db.models import utcnow
from gateway.scim.filters import Compare
from gateway.scim.storage import (
    Conflict,
    Member,
    NotFound,
    Page,
    Query,
    Record,
    ScimStorage,
    StorageError,
    UnknownMembers,
)

from .query import Evaluator, Resource

#: How long a write waits for another request's write to end before failing.
LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Doc:
    data: dict
    version: int
    created: object
    last_modified: object


class _State:
    """Everything stored; :meth:`copy` is what a transaction works on."""

    def __init__(self):
        self.users: dict[str, _Doc] = {}
        self.groups: dict[str, _Doc] = {}
        self.user_names: dict[str, str] = {}  # lower-cased userName -> id
        self.group_names: dict[str, str] = {}  # lower-cased displayName -> id
        self.members: dict[str, dict[str, int]] = {}  # group id -> {user id: when it joined}
        self.sequence = 0

    def copy(self) -> _State:
        other = _State()
        other.users, other.groups = dict(self.users), dict(self.groups)
        other.user_names, other.group_names = dict(self.user_names), dict(self.group_names)
        other.members = dict(self.members)  # inner dicts are replaced, never changed in place
        other.sequence = self.sequence
        return other


@implementer(transaction.interfaces.IDataManager)
class _Joined:
    """The store's part in one transaction: its working copy and the write lock."""

    def __init__(self, storage: MemoryStorage, manager):
        self.storage = storage
        self.transaction_manager = manager
        if not storage._lock.acquire(timeout=LOCK_TIMEOUT):
            raise StorageError(f"the in-memory store stayed locked by another write for {LOCK_TIMEOUT:.0f} s")
        self.state = storage._committed.copy()
        self.locked = True

    def _release(self) -> None:
        if self.locked:
            self.locked = False
            self.storage._lock.release()

    def abort(self, txn) -> None:
        self._release()

    def tpc_begin(self, txn) -> None:
        pass

    def commit(self, txn) -> None:
        pass

    def tpc_vote(self, txn) -> None:
        pass

    def tpc_finish(self, txn) -> None:
        self.storage._committed = self.state
        self._release()

    def tpc_abort(self, txn) -> None:
        self._release()

    def sortKey(self) -> str:
        # After the SQL session's "~sqlalchemy:..." key: it commits (in its
        # vote) before this store makes its copy the committed state.
        return f"~~gateway_memstore:{id(self)}"


def _new_id() -> str:
    return str(uuid.uuid4())


class MemoryStorage(ScimStorage):
    keeps_directory = False
    reads_without_transaction = True

    def __init__(self):
        self._committed = _State()
        self._lock = threading.Lock()
        self._users = Evaluator(groups=False)
        self._groups = Evaluator(groups=True)

    # ---------------------------------------------------------------- transactions

    def _transaction(self, request):
        manager = getattr(request, "tm", None)
        if manager is None:
            return None
        try:
            return manager.get()
        except transaction.interfaces.NoTransaction:
            return None

    def _read(self, request) -> _State:
        """The state a read sees: this transaction's copy if it wrote, else the committed one."""
        txn = self._transaction(request)
        if txn is not None:
            try:
                return txn.data(self).state
            except KeyError:
                pass
        return self._committed

    def _write(self, request) -> _State:
        """The transaction's working copy, joining the transaction first if needed."""
        txn = self._transaction(request)
        if txn is None:
            raise StorageError("the in-memory store writes only inside the request's transaction")
        try:
            return txn.data(self).state
        except KeyError:
            joined = _Joined(self, request.tm)
            try:
                txn.join(joined)
            except BaseException:
                joined._release()
                raise
            txn.set_data(self, joined)
            return joined.state

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _record(resource_id: str, doc: _Doc, members=None) -> Record:
        return Record(
            resource_id, copy.deepcopy(doc.data), doc.version, doc.created, doc.last_modified, members=members
        )

    @staticmethod
    def _members(state: _State, group_id: str) -> list[Member]:
        joined = state.members.get(group_id, {})
        return [Member(u) for u in sorted(joined, key=lambda u: (joined[u], u))]

    @staticmethod
    def _bump(state: _State, group_id: str) -> None:
        doc = state.groups[group_id]
        state.groups[group_id] = _Doc(doc.data, doc.version + 1, doc.created, utcnow())

    def _page(
        self, evaluator: Evaluator, docs: dict[str, _Doc], state: _State, query: Query, members: bool, index=None
    ) -> Page:
        match = evaluator.matcher(query.filter) if query.filter is not None else None
        key = evaluator.sort_key(query.sort_by)
        ids = self._indexed(query, index) if index is not None else None
        candidates = ids if ids is not None else docs.keys()

        def resource(resource_id):
            doc = docs[resource_id]
            return Resource(
                resource_id, doc.data, doc.created, doc.last_modified, lambda: list(state.members.get(resource_id, {}))
            )

        found = [r for r in (resource(i) for i in candidates if i in docs) if match is None or match(r)]
        found.sort(key=key, reverse=query.descending)
        start = max(query.start_index, 1) - 1
        chosen = found[start : start + query.count] if query.count > 0 else []
        return Page(
            total=len(found),
            resources=[self._record(r.id, docs[r.id], self._members(state, r.id) if members else None) for r in chosen],
        )

    @staticmethod
    def _indexed(query: Query, index: tuple[str, dict[str, str]]):
        """The one candidate id of an ``eq`` on the unique name (what Entra sends before every create), else None."""
        name, by_key = index
        expr = query.filter
        if (
            isinstance(expr, Compare)
            and expr.op == "eq"
            and isinstance(expr.value, str)
            and expr.path.urn is None
            and expr.path.sub is None
            and expr.path.attribute.name == name
        ):
            found = by_key.get(expr.value.lower())
            return [found] if found else []
        return None

    # ---------------------------------------------------------------- users

    def create_user(self, request, data: dict) -> Record:
        state = self._write(request)
        key = data["userName"].lower()
        if key in state.user_names:
            raise Conflict(f'userName "{data["userName"]}" is taken')
        now = utcnow()
        user_id = _new_id()
        state.users[user_id] = _Doc(copy.deepcopy(data), 1, now, now)
        state.user_names[key] = user_id
        return self._record(user_id, state.users[user_id])

    def get_user(self, request, user_id: str, *, for_update: bool = False) -> Record | None:
        state = self._write(request) if for_update else self._read(request)
        doc = state.users.get(user_id)
        return self._record(user_id, doc) if doc else None

    def replace_user(self, request, user_id: str, data: dict) -> Record:
        state = self._write(request)
        old = state.users[user_id]
        old_key, key = old.data["userName"].lower(), data["userName"].lower()
        if key != old_key:
            if key in state.user_names:
                raise Conflict(f'userName "{data["userName"]}" is taken')
            del state.user_names[old_key]
            state.user_names[key] = user_id
        state.users[user_id] = _Doc(copy.deepcopy(data), old.version + 1, old.created, utcnow())
        return self._record(user_id, state.users[user_id])

    def delete_user(self, request, user_id: str) -> bool:
        state = self._write(request)
        doc = state.users.pop(user_id, None)
        if doc is None:
            return False
        del state.user_names[doc.data["userName"].lower()]
        for group_id, joined in list(state.members.items()):
            if user_id in joined:
                state.members[group_id] = {u: s for u, s in joined.items() if u != user_id}
                self._bump(state, group_id)
        return True

    def query_users(self, request, query: Query) -> Page:
        state = self._read(request)
        return self._page(self._users, state.users, state, query, members=False, index=("userName", state.user_names))

    # ---------------------------------------------------------------- groups

    def _check_users(self, state: _State, user_ids) -> None:
        missing = {u for u in user_ids if u not in state.users}
        if missing:
            raise UnknownMembers(missing)

    def create_group(self, request, data: dict, member_ids: list[str]) -> Record:
        state = self._write(request)
        key = data["displayName"].lower()
        if key in state.group_names:
            raise Conflict(f'a group named "{data["displayName"]}" exists')
        self._check_users(state, member_ids)
        now = utcnow()
        group_id = _new_id()
        state.sequence += 1
        state.groups[group_id] = _Doc(copy.deepcopy(data), 1, now, now)
        state.group_names[key] = group_id
        state.members[group_id] = {u: state.sequence for u in member_ids}
        return self._record(group_id, state.groups[group_id], self._members(state, group_id))

    def get_group(self, request, group_id: str, *, with_members: bool = True, for_update: bool = False):
        state = self._write(request) if for_update else self._read(request)
        doc = state.groups.get(group_id)
        if doc is None:
            return None
        return self._record(group_id, doc, self._members(state, group_id) if with_members else None)

    def replace_group(self, request, group_id: str, data: dict) -> Record:
        state = self._write(request)
        old = state.groups[group_id]
        old_key, key = old.data["displayName"].lower(), data["displayName"].lower()
        if key != old_key:
            if key in state.group_names:
                raise Conflict(f'a group named "{data["displayName"]}" exists')
            del state.group_names[old_key]
            state.group_names[key] = group_id
        state.groups[group_id] = _Doc(copy.deepcopy(data), old.version + 1, old.created, utcnow())
        return self._record(group_id, state.groups[group_id])

    def delete_group(self, request, group_id: str) -> bool:
        state = self._write(request)
        doc = state.groups.pop(group_id, None)
        if doc is None:
            return False
        del state.group_names[doc.data["displayName"].lower()]
        state.members.pop(group_id, None)
        return True

    def query_groups(self, request, query: Query) -> Page:
        state = self._read(request)
        return self._page(
            self._groups,
            state.groups,
            state,
            query,
            members=query.with_members,
            index=("displayName", state.group_names),
        )

    # ---------------------------------------------------------------- membership

    def add_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        state = self._write(request)
        if group_id not in state.groups:
            raise NotFound(f"Group {group_id} not found")
        self._check_users(state, user_ids)
        joined = state.members.get(group_id, {})
        added = [u for u in dict.fromkeys(user_ids) if u not in joined]
        if added:
            state.sequence += 1
            state.members[group_id] = {**joined, **{u: state.sequence for u in added}}
            self._bump(state, group_id)
        return added

    def remove_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        state = self._write(request)
        joined = state.members.get(group_id, {})
        removed = [u for u in dict.fromkeys(user_ids) if u in joined]
        if removed:
            gone = set(removed)
            state.members[group_id] = {u: s for u, s in joined.items() if u not in gone}
            self._bump(state, group_id)
        return removed

    def set_members(self, request, group_id: str, user_ids: list[str]) -> None:
        state = self._write(request)
        if group_id not in state.groups:
            raise NotFound(f"Group {group_id} not found")
        self._check_users(state, user_ids)
        joined = state.members.get(group_id, {})
        state.sequence += 1
        state.members[group_id] = {u: joined.get(u, state.sequence) for u in dict.fromkeys(user_ids)}
        self._bump(state, group_id)

    def count_members(self, request, group_id: str) -> int:
        return len(self._read(request).members.get(group_id, {}))
