"""The in-memory identity cache never outlives a change in the database.

Two app instances on one database stand for two gateway processes: a change
written through one must be refused by the other on its next request.
"""

import time

import pytest
import sqlalchemy as sa

from gateway.db.models import SsoSession, User, utcnow
from gateway.identity_cache import wait_until_listening
from conftest import status_from_another_process
from saml_support import sign_in
from scim_support import ScimClient, make_token

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
    (key, identity), = cache._entries.items()
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
        group = Group(display_name=group_name, display_name_key=group_name.lower(), scim_data={"displayName": group_name})
        db.add(group)
        db.flush()
        db.add(GroupMember(group_id=group.id, user_id=user_id))


def _listen(postgres_url: str):
    import psycopg

    connection = psycopg.connect(sa.engine.make_url(postgres_url).set(drivername="postgresql").render_as_string(False),
                                 autocommit=True)
    connection.execute("LISTEN gateway_identity")
    return connection


def _notified(connection, within: float = 0.3) -> list[str]:
    """The notifications that arrive within ``within`` seconds."""
    return [n.payload for n in connection.notifies(timeout=within)]


@pytest.mark.postgres
def test_a_group_added_to_a_signed_in_user_reaches_another_instance(make_app, idp, postgres_url):
    first = make_app(**{"sqlalchemy.url": postgres_url})
    second = make_app(**{"sqlalchemy.url": postgres_url})
    assert wait_until_listening(cache_of(first))
    sign_in(first, idp)
    assert _groups_header(first) == ""
    assert _groups_header(first) == ""  # now from memory
    _add_member(second, "alice@example.com", "Finance")
    deadline = time.monotonic() + 1.0
    while _groups_header(first) != "Finance":
        assert time.monotonic() < deadline, "the new group never reached the other instance"
        time.sleep(0.002)


@pytest.mark.postgres
def test_membership_changes_of_users_nobody_is_signed_in_as_send_no_notification(make_app, idp, postgres_url):
    # An Entra sync fills groups for users who have not signed in: no instance
    # has anything cached about them, and a notification per PATCH would make
    # every instance drop its whole cache hundreds of times a second.
    from gateway.db.models import Group

    app = make_app(**{"sqlalchemy.url": postgres_url, "gateway.plugins": "entra sqlstore"})
    scim = ScimClient(app, make_token(app))
    bob = scim.create_user("bob@example.com")["id"]
    listener = _listen(postgres_url)
    try:
        group = scim.create_group("Engineering", [bob])["id"]
        scim.patch_ops(f"/Groups/{group}", {"op": "remove", "path": f'members[value eq "{bob}"]'}, status=204)
        scim.patch_ops(f"/Groups/{group}", {"op": "add", "path": "members", "value": [{"value": bob}]}, status=204)
        assert _notified(listener) == []
        # A renamed group does change what signed-in identities show.
        scim.patch_ops(f"/Groups/{group}", {"op": "replace", "path": "displayName", "value": "Eng"}, status=204)
        assert _notified(listener) == ["groups"]

        sign_in(app, idp, name="bob@example.com")
        _notified(listener, within=0.1)  # the sign-in's own
        scim.patch_ops(f"/Groups/{group}", {"op": "remove", "path": f'members[value eq "{bob}"]'}, status=204)
        assert _notified(listener) == ["group_members"]
        with app.app.registry.dbsession_factory() as db, db.begin():
            assert db.get(Group, group).display_name == "Eng"
    finally:
        listener.close()


@pytest.mark.postgres
def test_a_membership_change_during_a_sign_in_waits_for_it_and_notifies(make_app, idp, postgres_url):
    # The race the trigger closes: a member added while that user's sign-in
    # is between creating its session and committing. Without the wait the
    # trigger would find no session, send nothing, and the identity cached
    # right after the sign-in would lack the group for good.
    import threading

    app = make_app(**{"sqlalchemy.url": postgres_url})
    sign_in(app, idp)  # alice exists now
    engine = app.app.registry.db_engine
    listener = _listen(postgres_url)
    signing_in = engine.connect()
    try:
        transaction = signing_in.begin()
        # What start_session does before it adds the session row.
        user_id = signing_in.scalar(
            sa.select(User.id).where(User.user_name == "alice@example.com").with_for_update(key_share=True)
        )
        signing_in.execute(sa.delete(SsoSession))  # alice's only session is the one about to commit
        signing_in.execute(sa.insert(SsoSession).values(
            id_hash="x" * 64, user_id=user_id, created_at=utcnow(), last_seen_at=utcnow(),
            expires_at=utcnow(), csrf_token="c",
        ))
        done = threading.Event()
        worker = threading.Thread(target=lambda: (_add_member(app, "alice@example.com", "Finance"), done.set()))
        worker.start()
        assert not done.wait(0.3), "the membership change did not wait for the sign-in"
        transaction.commit()
        assert done.wait(5)
        worker.join()
        assert "group_members" in _notified(listener, within=1.0)
    finally:
        signing_in.close()
        listener.close()


@pytest.mark.postgres
def test_a_sign_in_locks_its_user_until_it_commits(make_app, idp, postgres_url):
    # The other half of the protocol above: a sign-in holds its user's row
    # lock (start_session takes it; the update of last_sign_in_at would too),
    # so it waits for a membership change in progress.
    import threading

    app = make_app(**{"sqlalchemy.url": postgres_url})
    sign_in(app, idp)
    changing = app.app.registry.db_engine.connect()
    try:
        transaction = changing.begin()
        changing.execute(sa.select(User.id).where(User.user_name == "alice@example.com").with_for_update(read=True))
        done = threading.Event()
        worker = threading.Thread(target=lambda: (sign_in(app, idp), done.set()))
        worker.start()
        assert not done.wait(0.3), "the sign-in did not wait for the change in progress"
        transaction.commit()
        assert done.wait(10)
        worker.join()
    finally:
        changing.close()
