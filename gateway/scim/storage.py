"""The SCIM storage interface: the reference for storage backend authors.

The SCIM core (``gateway.scim``) parses and validates every request, applies
PATCH operations, runs hooks and writes the audit trail; it reaches stored
users and groups only through the object a backend's ``factory(registry)``
returned, which must implement :class:`ScimStorage`. A backend registers
itself from ``gateway_scim_storage_backends()`` and is picked by
``scim.storage``. Every backend must pass the contract suite
:class:`gateway.testing.storage.ScimStorageContract`.

Who owns what:

- The backend owns the SCIM resources: each user's and group's document as
  SCIM sent it, its version (the ETag), its timestamps, and answering
  filters, sorting and paging over them. ``/scim/v2`` reads them only
  through this interface.
- The core owns the directory it acts on, in its own tables
  (:mod:`gateway.db.models`): ``users`` (id, userName, the IdP subject a
  sign-in links, active, the mapped profile columns, a copy of the SCIM
  document for the profile merge and the console), ``groups``,
  ``group_members``, and sessions. Sign-in matching, the profile sync,
  group claims, admin flags, forward-auth's groups, session ends and the
  console read only these tables, never the backend.
- The two agree on ids: the id a backend gives a resource is the id of the
  core's row, so it is a string of at most 36 characters (a uuid fits;
  a backend whose own keys are longer maps them). Every SCIM write reaches both stores in the same transaction,
  one of two ways, which the backend declares with :attr:`ScimStorage.keeps_directory`:

  - ``keeps_directory = True``: the backend writes the core's tables itself,
    as part of each write (``sqlstore``: those rows are its storage).
  - ``keeps_directory = False`` (the default): the backend keeps its data
    elsewhere, and the core wraps it in
    :class:`gateway.scim.directory.DirectoryMirror`, which forwards every
    call and mirrors each write's outcome into the core's tables in the same
    transaction. A user the core creates at a first sign-in
    (``provisioning.mode`` with ``first_login``) is created in the backend
    too, under the backend's id, so that Entra's ``userName eq`` lookup finds
    it; the console's (de)activation of such a user reaches the backend's
    document likewise.

Rules every method follows:

- The first argument is the Pyramid ``request``: ``registry``,
  ``dbsession`` (the transaction's SQLAlchemy session) and ``tm`` (its
  ``transaction`` manager). Writes must join the request's transaction: SQL
  through ``request.dbsession``; anything else as a data manager of
  ``request.tm.get()`` (the ``transaction`` package's public
  ``IDataManager``: ``abort``, ``tpc_begin``, ``commit``, ``tpc_vote``,
  ``tpc_finish``, ``tpc_abort``, ``sortKey``), so that a request that fails
  or is retried after a write leaves neither store changed.
- Resource ``data`` is a dict of the resource's attributes as the core
  validated them (canonical attribute names, values as sent, extension
  attributes under their URN key), without ``id``, ``meta``, ``schemas`` and,
  for groups, without ``members``. Store it as given and return it as given.
- ``version`` is an integer that every write to a resource increases (ETags
  are ``W/"<version>"``), including a change of a group's members. When the
  bump happens is the backend's choice (``sqlstore`` on PostgreSQL bumps a
  group in the statement that adds or removes its members; on SQLite, at the
  transaction's next read of the group, or at commit), as long as every read
  after the write, in the same transaction or after it commits, sees the new
  version.
- userName is unique case-insensitively, and so is a group's displayName;
  a write that would break that raises :class:`Conflict`, even when two
  requests race (rely on a unique index or a lock, not on a prior read).
  After a Conflict the core fails the request, so the transaction may be
  unusable.
- Filters arrive as the resolved AST of :mod:`gateway.scim.filters`; evaluate
  them in the store's own query language, never by loading every resource
  from a remote store. A filter the backend cannot evaluate raises
  :class:`Unsupported`, which the core turns into a 400 ``invalidFilter``:
  an unfiltered answer is never acceptable (Entra would create duplicates).
- Reads may run outside a transaction when the backend declares
  :attr:`ScimStorage.reads_without_transaction`; they must then see
  committed data.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field

from .filters import Expr
from .schemas import ResolvedPath


class StorageError(Exception):
    """Base of the errors a backend raises; the core maps each to a SCIM error."""


class Conflict(StorageError):
    """A unique value (userName, group displayName) is taken. -> 409 uniqueness."""


class Unsupported(StorageError):
    """The backend cannot evaluate this filter or sort. -> 400 invalidFilter."""


class NotFound(StorageError):
    """The group a membership change names does not exist. -> 404."""


class UnknownMembers(StorageError):
    """Some member ids name no stored user. -> 400 invalidValue.

    ``ids`` holds the unknown ones.
    """

    def __init__(self, ids):
        super().__init__(", ".join(sorted(ids)))
        self.ids = set(ids)


@dataclass
class Member:
    value: str  # the user's id


@dataclass
class Record:
    """A stored user or group as the backend returns it."""

    id: str
    data: dict
    version: int
    created: dt.datetime
    last_modified: dt.datetime
    #: Groups only, and only when asked for: None means "not loaded".
    members: list[Member] | None = None
    #: Optional, for a backend that keeps users in the gateway's ``users``
    #: table: the profile columns this write left in the row (the keys of
    #: :data:`gateway.provisioning.profile.SCIM_SYNC_COLUMNS`), so that the
    #: profile sync after the write need not read them back. None: unknown.
    stored_profile: dict | None = field(default=None, compare=False, repr=False)


@dataclass
class Query:
    """A list request. ``start_index`` is 1-based (RFC 7644 §3.4.2.4)."""

    filter: Expr | None = None
    sort_by: ResolvedPath | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    #: Groups only: whether the backend must load members.
    with_members: bool = True


@dataclass
class Page:
    total: int
    resources: list[Record] = field(default_factory=list)


class ScimStorage(abc.ABC):
    """What the SCIM core needs from a storage backend (see the module docstring)."""

    #: True when every write of this backend also writes the core's
    #: ``users``, ``groups`` and ``group_members`` rows (same ids, same
    #: transaction), as the shipped ``sqlstore`` does. False: the core wraps
    #: the backend in :class:`gateway.scim.directory.DirectoryMirror`.
    keeps_directory: bool = False

    #: True when reads need no transaction of the request (they run on a
    #: connection of their own, or in memory, and see committed data): the
    #: core then runs SCIM ``GET``/``HEAD`` requests without one, and the
    #: ``request`` they receive may have no ``dbsession`` to use.
    reads_without_transaction: bool = False

    # ---------------------------------------------------------------- users

    @abc.abstractmethod
    def create_user(self, request, data: dict) -> Record:
        """Store a new user; return it with a new id and version 1.

        ``data["userName"]`` is present; ``data.get("active", True)`` says
        whether the user may sign in. Raise :class:`Conflict` when another
        user has the same userName, compared case-insensitively.
        """

    @abc.abstractmethod
    def get_user(self, request, user_id: str, *, for_update: bool = False) -> Record | None:
        """The user with this id, or None.

        With ``for_update`` the core is about to write the user: hold a lock
        (``SELECT ... FOR UPDATE`` or equivalent) until the transaction ends,
        so concurrent PATCHes of one user apply one after the other instead of
        overwriting each other.
        """

    @abc.abstractmethod
    def replace_user(self, request, user_id: str, data: dict) -> Record:
        """Replace the user's data (the core already merged PATCHes); bump version.

        Raise :class:`Conflict` for a taken userName. The user exists (the
        core read it ``for_update`` in this transaction).
        """

    @abc.abstractmethod
    def delete_user(self, request, user_id: str) -> bool:
        """Delete the user and their group memberships (bumping those groups'
        versions). Return False if there was no such user."""

    @abc.abstractmethod
    def query_users(self, request, query: Query) -> Page:
        """Users matching ``query.filter`` (all when None), sorted by
        ``query.sort_by`` (a stable order of the backend's choosing when
        None), the ``count`` from ``start_index`` on, and the total number of
        matches. Raise :class:`Unsupported` for a filter or sort it cannot do.
        """

    # ---------------------------------------------------------------- groups

    @abc.abstractmethod
    def create_group(self, request, data: dict, member_ids: list[str]) -> Record:
        """Store a new group with these members (user ids); return it, members loaded.

        Raise :class:`Conflict` for a taken displayName (case-insensitive) and
        :class:`UnknownMembers` for ids that name no user.
        """

    @abc.abstractmethod
    def get_group(
        self, request, group_id: str, *, with_members: bool = True, for_update: bool = False
    ) -> Record | None:
        """The group, or None. Load ``members`` only when ``with_members``:
        Entra reads groups with ``excludedAttributes=members`` and a group may
        have tens of thousands. ``for_update`` as in :meth:`get_user`."""

    @abc.abstractmethod
    def replace_group(self, request, group_id: str, data: dict) -> Record:
        """Replace the group's data (not its members); bump version.
        Raise :class:`Conflict` for a taken displayName. Members not loaded."""

    @abc.abstractmethod
    def delete_group(self, request, group_id: str) -> bool:
        """Delete the group and its memberships. False if there was no such group."""

    @abc.abstractmethod
    def query_groups(self, request, query: Query) -> Page:
        """As :meth:`query_users`, for groups; members loaded only when
        ``query.with_members``."""

    # ---------------------------------------------------------------- membership

    @abc.abstractmethod
    def add_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        """Add users to the group, touching only their memberships (never
        rewriting the whole list: a group may have 50,000 members). Ids already
        members are ignored. Raise :class:`UnknownMembers` for ids that name no
        user, having added none of the others, and :class:`NotFound` if the
        group does not exist (the core may call this without reading the
        group first). Return the ids actually added. Bumps the version if any
        was."""

    @abc.abstractmethod
    def remove_members(self, request, group_id: str, user_ids: list[str]) -> list[str]:
        """Remove these users from the group (only these); ids that are not
        members are ignored, and a group that does not exist has none to
        remove. Return the ids actually removed. Bumps the version if any was."""

    @abc.abstractmethod
    def set_members(self, request, group_id: str, user_ids: list[str]) -> None:
        """Make the group's members exactly these users (PUT, or a PATCH that
        replaces ``members``). Raise :class:`UnknownMembers` as
        :meth:`add_members`. Bumps the version."""

    @abc.abstractmethod
    def count_members(self, request, group_id: str) -> int:
        """How many members the group has."""
