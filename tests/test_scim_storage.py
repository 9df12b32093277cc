"""The storage contract (gateway.testing.storage) run on the shipped sqlstore, SQLite and PostgreSQL,
and on memstore, the backend that keeps its data outside the gateway's tables."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.scim.filters import parse_filter
from gateway.scim.storage import Query
from gateway.testing.storage import ACME, ENTERPRISE, TYPES, ScimStorageContract, StorageRequest, user  # noqa: F401


class TestSqlStore(ScimStorageContract):
    @pytest.fixture
    def gateway_database_url(self, database_url):
        # The kit's database is SQLite; the project runs the contract on PostgreSQL too.
        return database_url

    @pytest.fixture
    def backend_settings(self):
        return {"gateway.plugins": "entra sqlstore", "scim.storage": "sqlstore"}

    def test_the_core_calls_it_unwrapped(self, storage):
        # It writes the core's tables itself: no mirror on the path of every Entra request.
        from gateway.scim.directory import DirectoryMirror
        from gateway_sqlstore.store import SqlStorage

        assert type(storage) is SqlStorage and not isinstance(storage, DirectoryMirror)

    def test_a_read_after_a_membership_change_is_the_row_as_it_stands(self, storage, tx):
        # On PostgreSQL a membership statement bumps the version itself and
        # the next read answers from the row it returned: that row must never
        # outlive a savepoint rolled back under it, nor a later write.
        with tx() as request:
            uids = [storage.create_user(request, user(f"s{i}")).id for i in range(3)]
            group = storage.create_group(request, {"displayName": "Rows"}, [])
        with tx() as request:
            savepoint = request.dbsession.begin_nested()
            storage.add_members(request, group.id, uids[:1])
            assert storage.get_group(request, group.id, with_members=False).version == 2
            savepoint.rollback()
            got = storage.get_group(request, group.id)
            assert got.version == 1 and got.members == []
            storage.add_members(request, group.id, uids[:2])
            added = storage.get_group(request, group.id, with_members=False).version
            storage.set_members(request, group.id, uids[1:])  # owes a bump of its own
            got = storage.get_group(request, group.id)
            assert got.version == added + 1 and {m.value for m in got.members} == set(uids[1:])
            storage.remove_members(request, group.id, uids[2:])
            renamed = storage.replace_group(request, group.id, {"displayName": "Rows renamed"})
            got = storage.get_group(request, group.id, with_members=False)
            assert got.data["displayName"] == "Rows renamed" and got.version == renamed.version
        with tx() as request:
            got = storage.get_group(request, group.id)
            assert got.version == renamed.version and [m.value for m in got.members] == uids[1:2]
            storage.add_members(request, group.id, uids[:1])
            assert storage.delete_group(request, group.id)
            assert storage.get_group(request, group.id) is None
        with tx() as request:  # a bump still owed survives a savepoint rolled back after a later change
            other = storage.create_group(request, {"displayName": "Owed"}, [])
            storage.set_members(request, other.id, uids[:1])
            savepoint = request.dbsession.begin_nested()
            storage.add_members(request, other.id, uids[1:2])
            savepoint.rollback()
        with tx() as request:
            got = storage.get_group(request, other.id)
            assert got.version > other.version and [m.value for m in got.members] == uids[:1]


class TestMemStore(ScimStorageContract):
    """The second backend: documents in memory, the core's tables mirrored (gateway.scim.directory)."""

    @pytest.fixture
    def backend_settings(self):
        return {"gateway.plugins": "entra memstore", "scim.storage": "memstore"}

    def test_it_keeps_nothing_in_the_gateway_tables_but_the_mirror(self, storage, tx, registry):
        from gateway.scim.directory import DirectoryMirror

        assert isinstance(storage, DirectoryMirror) and not storage.backend.keeps_directory
        with tx() as request:
            created = storage.create_user(request, user("ann", title="Engineer"))
        with tx() as request:  # the core's copy changed behind the backend's back: SCIM reads never see it
            from gateway.db.models import User

            request.dbsession.execute(sa.update(User).values(scim_data={"userName": "changed"}))
            import zope.sqlalchemy

            zope.sqlalchemy.mark_changed(request.dbsession)
        with tx() as request:
            assert storage.get_user(request, created.id).data == user("ann", title="Engineer")


def test_filters_are_translated_into_sql_not_python(make_app, sqlite_url):
    """The sqlstore's query for a userName filter is one indexed SQL lookup."""
    import sqlalchemy as sa

    app = make_app(**{"sqlalchemy.url": sqlite_url, "gateway.plugins": "entra sqlstore"})
    registry = app.app.registry
    statements = []
    with Session(registry.db_engine) as session:
        # What reaches SQLite, whichever way the store runs it (prebuilt statements skip SQLAlchemy's events).
        session.connection().connection.driver_connection.set_trace_callback(statements.append)
        request = StorageRequest(registry, session)
        page = registry.scim_storage.query_users(request, Query(filter=parse_filter('userName eq "X"', TYPES["User"])))
        assert page.total == 0
        lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "users" in s]
        assert len(lookups) == 1, statements  # no separate count(*) when the first page holds every match
        plan = session.execute(sa.text("EXPLAIN QUERY PLAN " + lookups[0])).all()
    assert "user_name_key = 'x'" in lookups[0]
    assert any("INDEX" in str(row).upper() for row in plan), plan


def test_on_memstore_the_backend_sees_what_the_core_changes(make_app, idp):
    """A first sign-in and the console's deactivation reach a backend that keeps
    its own data: Entra's lookup finds the user, and reads them as the console left them."""
    import webtest

    from gateway.db.models import User
    from gateway.testing.saml import sign_in_as
    from scim_support import ScimClient, make_token

    app = make_app(
        **{
            "gateway.plugins": "entra memstore",
            "scim.storage": "memstore",
            "gateway.admin_groups": "Admins",
            "provisioning.mode": "scim first_login",
        }
    )
    scim = ScimClient(app, make_token(app))
    sign_in_as(app, idp, "root@example.com", groups=("Admins",))
    bob_browser = webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "localhost"})
    sign_in_as(bob_browser, idp, "bob@example.com")
    with app.app.registry.dbsession_factory() as db:
        bob = db.scalar(sa.select(User.id).where(User.user_name_key == "bob@example.com"))
    found = scim.get('/Users?filter=userName eq "BOB@example.com"').json["Resources"]
    assert [(u["id"], u["active"]) for u in found] == [(bob, True)]

    page = app.get(f"/admin/users/{bob}")
    next(f for f in page.forms.values() if f.action.endswith("/deactivate")).submit(status=303)
    bob_browser.get("/whoami", status=401)
    assert scim.get(f"/Users/{bob}").json["active"] is False
