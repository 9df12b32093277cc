"""The storage contract: every SCIM storage backend must pass these tests.

A backend's test module subclasses :class:`ScimStorageContract` and returns,
from the fixture ``backend_settings``, the settings that enable it::

    from gateway.testing.storage import ScimStorageContract

    class TestMyStore(ScimStorageContract):
        @pytest.fixture
        def backend_settings(self):
            return {"gateway.plugins": "entra mystore", "scim.storage": "mystore"}

The tests talk to the backend only through
:class:`gateway.scim.storage.ScimStorage`, with a request that carries what
the interface promises (``registry``, ``dbsession`` and ``tm``: each ``tx()``
is one transaction of a ``transaction`` manager that the session joins, as a
request's is), on the database of the ``gateway_database_url`` fixture
(SQLite, or PostgreSQL with ``--gateway-database-url``). The gateway's own
tests run it on both. The storage under test is the one the core calls:
a backend that does not keep the core's directory tables comes wrapped in
:class:`gateway.scim.directory.DirectoryMirror`, and
:meth:`ScimStorageContract.test_the_core_directory_follows_every_write`
checks that those tables follow it.
"""

from __future__ import annotations

import contextlib

import pytest
import sqlalchemy as sa
import transaction

from gateway.scim.filters import parse_filter
from gateway.scim.schemas import resource_types
from gateway.scim.storage import Conflict, NotFound, Query, ScimStorage, UnknownMembers

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ACME = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
TYPES = resource_types([ACME])


class StorageRequest:
    """The request surface a backend may use: the registry, the transaction's
    session and its transaction manager."""

    def __init__(self, registry, dbsession, tm=None):
        self.registry = registry
        self.dbsession = dbsession
        self.tm = tm


def user(user_name, **extra):
    return {"userName": user_name, "active": True, **extra}


class ScimStorageContract:
    @pytest.fixture
    def backend_settings(self):
        raise NotImplementedError("a backend's test class returns the settings that enable it")

    @pytest.fixture
    def registry(self, gateway_make_app, backend_settings):
        app = gateway_make_app(**{"scim.custom_schemas": ACME, **backend_settings})
        return app.app.registry

    @pytest.fixture
    def storage(self, registry) -> ScimStorage:
        storage = registry.scim_storage
        assert isinstance(storage, ScimStorage)
        return storage

    @pytest.fixture
    def tx(self, registry):
        """``with tx() as request:`` one committed transaction (rolled back on error)."""

        from gateway.db import get_tm_session

        @contextlib.contextmanager
        def one_transaction():
            manager = transaction.TransactionManager(explicit=True)
            manager.begin()
            session = get_tm_session(registry.dbsession_factory, manager)
            try:
                yield StorageRequest(registry, session, manager)
            except BaseException:
                manager.abort()
                raise
            else:
                manager.commit()
            finally:
                session.close()

        return one_transaction

    def users(self, storage, tx, text=None, **query):
        with tx() as request:
            q = Query(filter=parse_filter(text, TYPES["User"]) if text else None, **query)
            page = storage.query_users(request, q)
        return page

    def names(self, storage, tx, text=None, **query):
        return [r.data["userName"] for r in self.users(storage, tx, text, **query).resources]

    # ---------------------------------------------------------------- users

    def test_user_round_trips_as_sent(self, storage, tx):
        data = user(
            "Alice@Example.com",
            name={"givenName": "Alice", "familyName": "Liddell"},
            emails=[{"type": "work", "value": "Alice@Example.com", "primary": True}],
            roles=[],
            **{ENTERPRISE: {"department": "R&D", "manager": {"value": "m-1"}}, ACME: {"badge": "A-7"}},
        )
        with tx() as request:
            created = storage.create_user(request, data)
        assert created.version == 1 and created.id
        with tx() as request:
            got = storage.get_user(request, created.id)
        assert got.data == data
        assert got.created.tzinfo is not None and got.last_modified >= got.created

    def test_user_name_is_unique_case_insensitively(self, storage, tx):
        with tx() as request:
            storage.create_user(request, user("bob@example.com"))
        with pytest.raises(Conflict):
            with tx() as request:
                storage.create_user(request, user("BOB@example.COM"))
        assert self.names(storage, tx) == ["bob@example.com"]

    def test_replace_bumps_version_and_replaces_data(self, storage, tx):
        with tx() as request:
            created = storage.create_user(request, user("carol", title="Engineer"))
        with tx() as request:
            storage.get_user(request, created.id, for_update=True)
            replaced = storage.replace_user(request, created.id, user("carol", displayName="Carol"))
        assert replaced.version == 2
        with tx() as request:
            assert storage.get_user(request, created.id).data == user("carol", displayName="Carol")

    def test_replace_to_a_taken_user_name_conflicts(self, storage, tx):
        with tx() as request:
            storage.create_user(request, user("dan"))
            other = storage.create_user(request, user("erin"))
        with pytest.raises(Conflict):
            with tx() as request:
                storage.replace_user(request, other.id, user("DAN"))

    def test_missing_and_deleted_users(self, storage, tx):
        with tx() as request:
            assert storage.get_user(request, "no-such-id") is None
            created = storage.create_user(request, user("frank"))
        with tx() as request:
            assert storage.delete_user(request, created.id) is True
        with tx() as request:
            assert storage.get_user(request, created.id) is None
            assert storage.delete_user(request, created.id) is False

    def test_a_failed_transaction_leaves_nothing(self, storage, tx):
        with pytest.raises(RuntimeError):
            with tx() as request:
                storage.create_user(request, user("ghost"))
                raise RuntimeError("the request failed after the write")
        assert self.users(storage, tx).total == 0

    # ---------------------------------------------------------------- the core's directory

    def directory(self, registry):
        """The core's own tables, as the core reads them: {user id: (userName, active, email)},
        {group id: displayName}, {(group id, user id)}."""
        from gateway.db.models import Group, GroupMember, User

        with registry.db_engine.connect() as connection:
            users = {
                r.id: (r.user_name, r.active, r.email)
                for r in connection.execute(sa.select(User.id, User.user_name, User.active, User.email))
            }
            groups = dict(connection.execute(sa.select(Group.id, Group.display_name)).all())
            members = set(connection.execute(sa.select(GroupMember.group_id, GroupMember.user_id)).all())
        return users, groups, members

    def test_the_core_directory_follows_every_write(self, storage, tx, registry):
        # Sign-in, deactivation, forward-auth and the console read the core's
        # tables, never the backend: each write must reach them, under the backend's ids.
        assert storage.keeps_directory
        mail = {"emails": [{"type": "work", "value": "Ann@Example.com"}]}
        with tx() as request:
            ann = storage.create_user(request, user("ann", **mail)).id
            bob = storage.create_user(request, user("bob")).id
            staff = storage.create_group(request, {"displayName": "Staff"}, [ann]).id
        assert self.directory(registry) == (
            {ann: ("ann", True, "Ann@Example.com"), bob: ("bob", True, None)},
            {staff: "Staff"},
            {(staff, ann)},
        )
        with tx() as request:
            storage.get_user(request, bob, for_update=True)
            storage.replace_user(request, bob, user("robert", active=False))
            storage.replace_group(request, staff, {"displayName": "Everyone"})
            storage.add_members(request, staff, [bob])
            storage.remove_members(request, staff, [ann])
        assert self.directory(registry) == (
            {ann: ("ann", True, "Ann@Example.com"), bob: ("robert", False, None)},
            {staff: "Everyone"},
            {(staff, bob)},
        )
        with tx() as request:
            storage.set_members(request, staff, [ann, bob])
            other = storage.create_group(request, {"displayName": "Other"}, [bob]).id
        assert self.directory(registry)[2] == {(staff, ann), (staff, bob), (other, bob)}
        with tx() as request:
            storage.delete_user(request, bob)
            storage.delete_group(request, other)
        assert self.directory(registry) == (
            {ann: ("ann", True, "Ann@Example.com")},
            {staff: "Everyone"},
            {(staff, ann)},
        )

    def test_a_failed_transaction_leaves_neither_store_changed(self, storage, tx, registry):
        with tx() as request:
            ann = storage.create_user(request, user("ann")).id
            staff = storage.create_group(request, {"displayName": "Staff"}, []).id
        before = self.directory(registry)
        with pytest.raises(RuntimeError):
            with tx() as request:
                storage.create_user(request, user("ghost"))
                storage.get_user(request, ann, for_update=True)
                storage.replace_user(request, ann, user("ann", active=False))
                storage.add_members(request, staff, [ann])
                raise RuntimeError("the request failed after the writes")
        assert self.directory(registry) == before
        with tx() as request:
            assert storage.get_user(request, ann).data == user("ann")
            assert storage.get_group(request, staff).members == []
            assert storage.query_users(request, Query()).total == 1

    def test_a_conflict_leaves_the_core_directory_as_it_was(self, storage, tx, registry):
        with tx() as request:
            storage.create_user(request, user("ann"))
        before = self.directory(registry)
        with pytest.raises(Conflict):
            with tx() as request:
                storage.create_user(request, user("ANN"))
        assert self.directory(registry) == before

    # ---------------------------------------------------------------- filters

    @pytest.fixture
    def people(self, storage, tx):
        with tx() as request:
            for name, extra in [
                (
                    "Alice@Example.com",
                    dict(
                        externalId="A1",
                        title="Engineer",
                        emails=[
                            {"type": "work", "value": "alice@example.com"},
                            {"type": "home", "value": "al@home.test"},
                        ],
                        **{ENTERPRISE: {"department": "R&D", "employeeNumber": "7"}},
                    ),
                ),
                (
                    "bob@example.com",
                    dict(
                        externalId="B2",
                        title="Manager",
                        active=False,
                        emails=[{"type": "home", "value": "bob@example.com", "primary": True}],
                        **{ACME: {"badge": "X-1"}},
                    ),
                ),
                (
                    "carol@other.test",
                    dict(
                        externalId="a1",
                        displayName="Carol",
                        roles=[{"value": "admin"}],
                        **{ENTERPRISE: {"department": "Sales", "manager": {"value": "boss-id"}}},
                    ),
                ),
            ]:
                storage.create_user(request, user(name, **extra))

    @pytest.mark.parametrize(
        "text, expected",
        [
            ('userName eq "alice@example.COM"', ["Alice@Example.com"]),
            ('userName eq "nobody"', []),
            ('externalId eq "A1"', ["Alice@Example.com"]),  # caseExact
            ('userName sw "ALICE"', ["Alice@Example.com"]),
            ('userName ew ".test"', ["carol@other.test"]),
            ('userName co "EXAMPLE"', ["Alice@Example.com", "bob@example.com"]),
            ('userName gt "b"', ["bob@example.com", "carol@other.test"]),
            ('title ne "engineer"', ["bob@example.com", "carol@other.test"]),
            ("displayName pr", ["carol@other.test"]),
            ("active eq false", ["bob@example.com"]),
            ('not (active eq false) and userName co "example"', ["Alice@Example.com"]),
            ('title eq "Manager" or displayName eq "carol"', ["bob@example.com", "carol@other.test"]),
            ('emails[type eq "work"].value eq "ALICE@example.com"', ["Alice@Example.com"]),
            ('emails[type eq "work" and value co "alice"]', ["Alice@Example.com"]),
            ('emails.value eq "al@home.test"', ["Alice@Example.com"]),
            ('emails[type eq "home"].value eq "alice@example.com"', []),
            ("emails.primary eq true", ["bob@example.com"]),
            ("emails pr", ["Alice@Example.com", "bob@example.com"]),
            ('roles.value eq "admin"', ["carol@other.test"]),
            (f'{ENTERPRISE}:department eq "r&d"', ["Alice@Example.com"]),
            (f'{ENTERPRISE}:manager.value eq "boss-id"', ["carol@other.test"]),
            (f'{ACME}:badge eq "x-1"', ["bob@example.com"]),
            ('meta.created gt "2000-01-01T00:00:00Z"', ["Alice@Example.com", "bob@example.com", "carol@other.test"]),
        ],
    )
    def test_filters(self, storage, tx, people, text, expected):
        assert sorted(self.names(storage, tx, text)) == expected

    def test_pagination_sorting_and_totals(self, storage, tx):
        with tx() as request:
            for i in range(7):
                storage.create_user(request, user(f"user{i}", displayName=f"D{6 - i}"))
        page = self.users(storage, tx, start_index=3, count=2, sort_by=TYPES["User"].resolve("userName"))
        assert page.total == 7 and [r.data["userName"] for r in page.resources] == ["user2", "user3"]
        names = self.names(storage, tx, sort_by=TYPES["User"].resolve("displayName"), descending=True)
        assert names == [f"user{i}" for i in range(7)]
        assert self.users(storage, tx, count=0).total == 7
        assert self.users(storage, tx, count=0).resources == []
        # The default order is stable: two reads of all pages give every user once.
        seen = [r.id for s in (1, 4, 7) for r in self.users(storage, tx, start_index=s, count=3).resources]
        assert len(seen) == len(set(seen)) == 7

    # ---------------------------------------------------------------- groups

    def test_groups_and_members_row_by_row(self, storage, tx):
        with tx() as request:
            ids = [storage.create_user(request, user(f"m{i}")).id for i in range(5)]
        with tx() as request:
            group = storage.create_group(request, {"displayName": "Staff", "externalId": "g-1"}, ids[:2])
        assert group.version == 1 and {m.value for m in group.members} == set(ids[:2])
        with tx() as request:  # the create answers what a read then returns
            assert storage.get_group(request, group.id) == group
        with tx() as request:
            assert sorted(storage.add_members(request, group.id, ids[1:4])) == sorted(ids[2:4])
        with tx() as request:
            assert storage.remove_members(request, group.id, [ids[0], "not-a-member"]) == [ids[0]]
        with tx() as request:
            got = storage.get_group(request, group.id)
            assert {m.value for m in got.members} == set(ids[1:4])
            assert got.version == 3
            assert storage.count_members(request, group.id) == 3
            assert storage.get_group(request, group.id, with_members=False).members is None
        with tx() as request:
            storage.set_members(request, group.id, [ids[4]])
        with tx() as request:
            assert [m.value for m in storage.get_group(request, group.id).members] == [ids[4]]
            # An unknown id refuses the whole list, before anything changes.
            with pytest.raises(UnknownMembers) as info:
                storage.set_members(request, group.id, [ids[0], "nobody"])
            assert info.value.ids == {"nobody"}
            assert [m.value for m in storage.get_group(request, group.id).members] == [ids[4]]
        with tx() as request:  # an id that begins like a member's is not that member
            assert storage.remove_members(request, group.id, [ids[4] + "-not-this-one"]) == []
        with tx() as request:  # empty lists: nothing to check, add or remove
            assert storage.remove_members(request, group.id, []) == []
            assert storage.add_members(request, group.id, []) == []
            storage.set_members(request, group.id, [])
        with tx() as request:
            assert storage.get_group(request, group.id).members == []

    def test_adding_nothing_new_keeps_the_version(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("n0")).id
            group = storage.create_group(request, {"displayName": "Same"}, [uid])
        with tx() as request:
            assert storage.add_members(request, group.id, [uid]) == []
            assert storage.get_group(request, group.id, with_members=False).version == 1

    def test_a_membership_change_moves_the_version_its_own_transaction_reads(self, storage, tx):
        # However late a backend bumps the version, every read after the change sees it.
        with tx() as request:
            uids = [storage.create_user(request, user(f"v{i}")).id for i in range(3)]
            group = storage.create_group(request, {"displayName": "Versions"}, [])
        by_name = Query(filter=parse_filter('displayName eq "Versions"', TYPES["Group"]))
        with tx() as request:
            storage.add_members(request, group.id, uids[:1])
            assert storage.get_group(request, group.id, with_members=False).version == 2
            storage.add_members(request, group.id, uids[1:2])
            assert storage.query_groups(request, by_name).resources[0].version == 3
            storage.remove_members(request, group.id, uids[:1])
            locked = storage.get_group(request, group.id, for_update=True)
            assert locked.version == 4 and {m.value for m in locked.members} == {uids[1]}
            storage.add_members(request, group.id, uids[2:])  # no read after this one
        with tx() as request:
            got = storage.get_group(request, group.id)
            assert got.version == 5 and {m.value for m in got.members} == set(uids[1:])
            storage.set_members(request, group.id, uids[:1])
            replaced = storage.replace_group(request, group.id, {"displayName": "Versions"})
            assert replaced.version > got.version  # one bump for both, or one each: the backend's choice
        with pytest.raises(RuntimeError):
            with tx() as request:
                storage.add_members(request, group.id, uids[1:])
                raise RuntimeError("rolled back")
        with tx() as request:  # the rolled-back add left version and members as committed
            got = storage.get_group(request, group.id)
            assert got.version == replaced.version and [m.value for m in got.members] == uids[:1]
        with tx() as request:
            storage.remove_members(request, group.id, uids[:1])
        with tx() as request:
            assert storage.get_group(request, group.id, with_members=False).version > replaced.version

    def test_a_membership_change_of_a_missing_group(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("p0")).id
        with pytest.raises(NotFound):
            with tx() as request:
                storage.add_members(request, "no-such-group", [uid])
        with tx() as request:
            assert storage.remove_members(request, "no-such-group", [uid]) == []
            assert storage.get_group(request, "no-such-group") is None

    def test_unknown_members_are_refused_and_nothing_is_added(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("o0")).id
            group = storage.create_group(request, {"displayName": "Strict"}, [])
        with pytest.raises(UnknownMembers) as info:
            with tx() as request:
                storage.add_members(request, group.id, [uid, "nobody"])
        assert info.value.ids == {"nobody"}
        with tx() as request:
            assert storage.count_members(request, group.id) == 0
            # Not even within the transaction: a caller that goes on after
            # the error commits no partial list.
            with pytest.raises(UnknownMembers):
                storage.add_members(request, group.id, ["nobody", uid])
            assert storage.count_members(request, group.id) == 0
            assert storage.add_members(request, group.id, [uid]) == [uid]

    def test_group_display_name_is_unique_case_insensitively(self, storage, tx):
        with tx() as request:
            storage.create_group(request, {"displayName": "Sales"}, [])
        with pytest.raises(Conflict):
            with tx() as request:
                storage.create_group(request, {"displayName": "SALES"}, [])

    def test_deleting_a_user_leaves_their_groups_with_a_new_version(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("p0")).id
            group = storage.create_group(request, {"displayName": "G"}, [uid])
        with tx() as request:
            storage.delete_user(request, uid)
        with tx() as request:
            got = storage.get_group(request, group.id)
        assert got.members == [] and got.version == 2

    def test_group_queries(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("q0")).id
            storage.create_group(request, {"displayName": "Readers"}, [uid])
            storage.create_group(request, {"displayName": "Writers"}, [])
        with tx() as request:

            def names(text, **kw):
                q = Query(filter=parse_filter(text, TYPES["Group"]), **kw)
                return sorted(r.data["displayName"] for r in storage.query_groups(request, q).resources)

            assert names('displayName eq "readers"') == ["Readers"]
            assert names(f'members.value eq "{uid}"') == ["Readers"]
            assert names(f'members[value eq "{uid}"]') == ["Readers"]
            assert names(f'not (members eq "{uid}")') == ["Writers"]
            page = storage.query_groups(request, Query(with_members=False))
            assert page.total == 2 and all(r.members is None for r in page.resources)

    def test_delete_group(self, storage, tx):
        with tx() as request:
            uid = storage.create_user(request, user("r0")).id
            group = storage.create_group(request, {"displayName": "Temp"}, [uid])
        with tx() as request:
            assert storage.delete_group(request, group.id) is True
        with tx() as request:
            assert storage.get_group(request, group.id) is None
            assert storage.get_user(request, uid) is not None
