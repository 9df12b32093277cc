"""The in-memory identity cache never outlives a change in the database.

Two app instances on one database stand for two gateway processes: a change
written through one must be refused by the other on its next request.
"""

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import status_from_another_process
from gateway.db.models import SsoSession, User, utcnow
from gateway.identity_cache import wait_until_listening
from saml_support import sign_in

PROXY = {"REMOTE_ADDR": "127.0.0.1"}


def deactivate_all(app):
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(User).values(active=False))


def cache_of(app):
    return app.app.registry.identity_cache


def test_repeated_checks_are_served_from_memory(make_app, idp):
    app = make_app()
    sign_in(app, idp)
    app.get("/auth", extra_environ=PROXY, status=200)
    cache = cache_of(app)
    generation = cache.generation()
    assert generation is not None and len(cache._entries) == 1
    for _ in range(5):
        app.get("/auth", extra_environ=PROXY, status=200)
    assert cache.generation() == generation  # nothing changed, nothing re-read


def test_sqlite_change_by_another_process_is_seen_at_once(make_app, idp):
    first, second = make_app(), make_app()  # same SQLite file, separate engines and caches
    sign_in(first, idp)
    first.get("/auth", extra_environ=PROXY, status=200)
    first.get("/auth", extra_environ=PROXY, status=200)  # now cached
    deactivate_all(second)
    first.get("/auth", extra_environ=PROXY, status=401)


@pytest.mark.postgres
def test_postgresql_change_by_another_process_is_seen_within_milliseconds(make_app, idp, postgres_url):
    first = make_app(**{"sqlalchemy.url": postgres_url})
    second = make_app(**{"sqlalchemy.url": postgres_url})
    assert wait_until_listening(cache_of(first))
    sign_in(first, idp)
    first.get("/auth", extra_environ=PROXY, status=200)
    first.get("/auth", extra_environ=PROXY, status=200)
    assert len(cache_of(first)._entries) == 1

    deactivate_all(second)
    assert status_from_another_process(first, "/auth", 401, within=1.0, extra_environ=PROXY) < 0.5


def test_a_change_through_this_instance_is_seen_by_its_next_request(make_app, idp, database_url):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp)
    app.get("/auth", extra_environ=PROXY, status=200)
    app.get("/auth", extra_environ=PROXY, status=200)
    deactivate_all(app)  # committed through this app's own session factory
    app.get("/auth", extra_environ=PROXY, status=401)


def test_expired_session_is_not_served_from_memory(make_app, idp):
    app = make_app()
    sign_in(app, idp)
    app.get("/auth", extra_environ=PROXY, status=200)
    cache = cache_of(app)
    ((key, identity),) = cache._entries.items()
    # Age the cached copy only: the database row is untouched, so only the
    # cache's own expiry check can refuse it.
    import dataclasses

    cache._entries[key] = dataclasses.replace(identity, expires_at=utcnow())
    app.get("/auth", extra_environ=PROXY, status=200)  # re-read from the database, still valid there
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(SsoSession).values(expires_at=utcnow()))
    app.get("/auth", extra_environ=PROXY, status=401)


@pytest.mark.postgres
def test_cache_is_off_while_the_listener_is_down(make_app, idp, postgres_url):
    app = make_app(**{"sqlalchemy.url": postgres_url})
    cache = cache_of(app)
    assert wait_until_listening(cache)
    cache.detector.close()
    deadline = time.monotonic() + 5
    while cache.generation() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sign_in(app, idp)
    app.get("/auth", extra_environ=PROXY, status=200)
    assert cache._entries == {}


# ---------------------------------------------------------------- group memberships (PostgreSQL, migration 0006)


def _groups_header(app) -> str:
    return app.get("/auth", extra_environ=PROXY, status=200).headers.get("X-Auth-Request-Groups", "")


def _add_member(app, user_name: str, group_name: str) -> None:
    from gateway.db.models import Group, GroupMember

    with app.app.registry.dbsession_factory() as db, db.begin():
        user_id = db.scalar(sa.select(User.id).where(User.user_name == user_name))
        group = Group(
            display_name=group_name, display_name_key=group_name.lower(), scim_data={"displayName": group_name}
        )
        db.add(group)
        db.flush()
        db.add(GroupMember(group_id=group.id, user_id=user_id))


class _Listener:
    """LISTEN gateway_identity; the notifications sent by one backend (NOTIFY is
    database-wide, and other test workers use other schemas of the database)."""

    def __init__(self, postgres_url: str):
        import psycopg

        url = sa.engine.make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
        self.connection = psycopg.connect(url, autocommit=True)
        self.connection.execute("LISTEN gateway_identity")

    def sent_by(self, pid: int, within: float = 0.3) -> list[str]:
        return [n.payload for n in self.connection.notifies(timeout=within) if n.pid == pid]

    def close(self) -> None:
        self.connection.close()


def _pid(connection) -> int:
    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    connection.rollback()  # end the read's transaction
    return pid


def _session_row(user_id: str, **values) -> dict:
    now = utcnow()
    return {
        "id_hash": values.pop("id_hash", "s" * 64),
        "user_id": user_id,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + dt.timedelta(hours=8),
        "csrf_token": "c",
        **values,
    }


def _new_user(connection, name: str) -> str:
    from gateway.db.models import new_id

    user_id = new_id()
    connection.execute(
        sa.insert(User).values(
            id=user_id,
            user_name=name,
            user_name_key=name.lower(),
            active=True,
            scim_data={},
            attributes={},
            provisioned_by="scim",
            is_admin=False,
            version=1,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    return user_id


def _new_group(connection, name: str) -> str:
    from gateway.db.models import Group, new_id

    group_id = new_id()
    connection.execute(
        sa.insert(Group).values(
            id=group_id,
            display_name=name,
            display_name_key=name.lower(),
            scim_data={"displayName": name},
            version=1,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    return group_id


@pytest.mark.postgres
def test_a_group_added_to_a_signed_in_user_reaches_another_instance(make_app, idp, postgres_url):
    first = make_app(**{"sqlalchemy.url": postgres_url})
    second = make_app(**{"sqlalchemy.url": postgres_url})
    assert wait_until_listening(cache_of(first))
    # No groups claim: a first-login user's groups come from the claim, and this test adds them itself.
    sign_in(first, idp, attributes=idp.claims("alice@example.com", groups=()))
    assert _groups_header(first) == ""
    assert _groups_header(first) == ""  # now from memory
    _add_member(second, "alice@example.com", "Finance")
    deadline = time.monotonic() + 1.0
    while _groups_header(first) != "Finance":
        assert time.monotonic() < deadline, "the new group never reached the other instance"
        time.sleep(0.002)


@pytest.mark.postgres
def test_only_changes_a_signed_in_identity_can_show_are_announced(postgres_url):
    # An Entra sync fills groups for users who have not signed in: nothing
    # about them is cached anywhere, and a notification per PATCH would make
    # every instance drop its whole cache hundreds of times a second.
    from gateway.db.models import Group, GroupMember

    engine = sa.create_engine(postgres_url)
    listener = _Listener(postgres_url)
    members = GroupMember.__table__
    try:
        with engine.connect() as connection:
            pid = _pid(connection)

            def change(*statements) -> list[str]:
                with connection.begin():
                    for statement in statements:
                        connection.execute(statement)
                return listener.sent_by(pid)

            with connection.begin():
                bob, carol, dave = (_new_user(connection, f"{n}@example.com") for n in ("bob", "carol", "dave"))
                group = _new_group(connection, "Engineering")
                connection.execute(sa.insert(SsoSession).values(_session_row(carol)))
                connection.execute(
                    sa.insert(SsoSession).values(
                        _session_row(dave, id_hash="d" * 64, ended_at=utcnow())  # signed out
                    )
                )
            listener.sent_by(pid)
            bump = sa.update(Group).where(Group.id == group).values(version=Group.version + 1)
            for user_id in (bob, dave):  # no session, an ended one
                assert (
                    change(sa.insert(members).values(group_id=group, user_id=user_id, created_at=utcnow()), bump) == []
                )
                assert change(sa.delete(members).where(members.c.user_id == user_id), bump) == []
            # A name is what identities show of a group.
            assert change(sa.update(Group).where(Group.id == group).values(display_name="Eng")) == ["groups"]
            # Carol is signed in.
            assert change(sa.insert(members).values(group_id=group, user_id=carol, created_at=utcnow())) == [
                "group_members"
            ]
            assert change(sa.delete(members).where(members.c.user_id == carol)) == ["group_members"]
    finally:
        listener.close()
        engine.dispose()


def test_the_user_columns_that_notify_are_those_an_identity_shows():
    import importlib

    from gateway import sessions

    migration = importlib.import_module("gateway.migrations.versions.0011_user_notify_identity_columns")
    shown = {column.name for column in sessions._COLUMNS if column.table.name == "users"}
    assert shown | {"id", "active"} == set(migration.IDENTITY_COLUMNS)


@pytest.mark.postgres
def test_a_sign_in_time_is_not_announced_but_a_name_is(postgres_url):
    # Every sign-in sets last_sign_in_at: announcing it made every instance drop its whole cache.
    engine = sa.create_engine(postgres_url)
    listener = _Listener(postgres_url)
    try:
        with engine.connect() as connection:
            pid = _pid(connection)
            with connection.begin():
                alice = _new_user(connection, "alice@example.com")
            listener.sent_by(pid)

            def change(**values) -> list[str]:
                with connection.begin():
                    connection.execute(sa.update(User).where(User.id == alice).values(**values))
                return listener.sent_by(pid)

            assert change(last_sign_in_at=utcnow(), updated_at=utcnow()) == []
            assert change(display_name="Alice") == ["users"]
            assert change(active=False) == ["users"]
            assert change(is_admin=True) == ["users"]
            with connection.begin():
                connection.execute(sa.delete(User).where(User.id == alice))
            assert "users" in listener.sent_by(pid)  # and "sessions", whose rows went with it
    finally:
        listener.close()
        engine.dispose()


@pytest.mark.postgres
def test_large_membership_changes_and_group_deletes_hold_few_locks(postgres_url):
    # Identity locks come from PostgreSQL's shared lock table, sized for 64
    # per transaction: past that, a change is announced without looking for
    # sessions. Memberships that go with their group: the group's DELETE
    # announces itself, and nothing is locked.
    from gateway.db.models import Group, GroupMember

    engine = sa.create_engine(postgres_url)
    listener = _Listener(postgres_url)
    members = GroupMember.__table__
    advisory = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
    try:
        with engine.connect() as connection:
            pid = _pid(connection)
            with connection.begin():
                users = [_new_user(connection, f"u{i}@example.com") for i in range(101)]
                group = _new_group(connection, "All")
            with connection.begin():  # one statement of 101
                connection.execute(
                    sa.insert(members).values(
                        [{"group_id": group, "user_id": u, "created_at": utcnow()} for u in users]
                    )
                )
                assert connection.execute(advisory).scalar() == 0
            assert listener.sent_by(pid) == ["group_members"]
            with connection.begin():  # 101 statements of one
                for user_id in users:
                    connection.execute(sa.delete(members).where(members.c.user_id == user_id))
                assert connection.execute(advisory).scalar() == 64
            assert listener.sent_by(pid) == ["group_members"]
            with connection.begin():
                connection.execute(
                    sa.insert(members).values(
                        [{"group_id": group, "user_id": u, "created_at": utcnow()} for u in users[:10]]
                    )
                )
            listener.sent_by(pid)
            with connection.begin():
                connection.execute(sa.delete(Group).where(Group.id == group))
                assert connection.execute(advisory).scalar() == 0
            assert listener.sent_by(pid) == ["groups"]
    finally:
        listener.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_membership_change_during_a_sign_in_waits_for_it_and_notifies(postgres_url):
    # The race the trigger closes: a member added while that user's sign-in
    # is between creating its session and committing. Without the wait the
    # trigger would find no session, send nothing, and the identity cached
    # right after the sign-in would lack the group for good.
    import threading

    from gateway.db.models import GroupMember
    from gateway.identity_cache import hold_identity_lock

    engine = sa.create_engine(postgres_url)
    listener = _Listener(postgres_url)
    try:
        with engine.begin() as connection:
            alice = _new_user(connection, "alice@example.com")  # no session yet
            group = _new_group(connection, "Finance")
        with Session(engine) as signing_in:
            with signing_in.begin():
                hold_identity_lock(signing_in, alice)  # what start_session does first
                signing_in.execute(sa.insert(SsoSession).values(_session_row(alice)))
                adding = engine.connect()
                pid = _pid(adding)
                done = threading.Event()

                def add():
                    with adding.begin():
                        adding.execute(
                            sa.insert(GroupMember.__table__).values(group_id=group, user_id=alice, created_at=utcnow())
                        )
                    done.set()

                worker = threading.Thread(target=add)
                worker.start()
                assert not done.wait(0.3), "the membership change did not wait for the sign-in"
            assert done.wait(5)  # the sign-in committed
            worker.join()
            adding.close()
        assert listener.sent_by(pid, within=1.0) == ["group_members"]
    finally:
        listener.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_sign_in_waits_for_a_membership_change_in_progress(make_app, idp, postgres_url):
    # The other half: a sign-in (start_session) waits for a membership change
    # of its user that has not committed, so what it caches includes it.
    import threading

    from gateway.db.models import GroupMember

    app = make_app(**{"sqlalchemy.url": postgres_url})
    no_groups = idp.claims("alice@example.com", groups=())  # the groups come from the change below
    sign_in(app, idp, attributes=no_groups)  # alice exists now
    engine = app.app.registry.db_engine
    with engine.begin() as connection:
        alice = connection.scalar(sa.select(User.id).where(User.user_name == "alice@example.com"))
        group = _new_group(connection, "Finance")
    changing = engine.connect()
    try:
        transaction = changing.begin()
        changing.execute(sa.insert(GroupMember.__table__).values(group_id=group, user_id=alice, created_at=utcnow()))
        done = threading.Event()
        worker = threading.Thread(target=lambda: (sign_in(app, idp, attributes=no_groups), done.set()))
        worker.start()
        assert not done.wait(0.3), "the sign-in did not wait for the membership change in progress"
        transaction.commit()
        assert done.wait(10)
        worker.join()
    finally:
        changing.close()
    assert _groups_header(app) == "Finance"
