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
