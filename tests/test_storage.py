"""The schema behaves the same on SQLite and PostgreSQL."""

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from gateway.db import migrate
from gateway.db.models import Base, Group, GroupMember, SsoSession, User, utcnow


def make_user(name="Alice@Example.com", **kw):
    return User(user_name=name, user_name_key=name.lower(), **kw)


def test_migrations_match_the_models(engine):
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": migrate.include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_user_name_is_unique_case_insensitively(engine):
    with Session(engine) as session, session.begin():
        session.add(make_user("Alice@Example.com"))
    with pytest.raises(sa.exc.IntegrityError):
        with Session(engine) as session, session.begin():
            session.add(make_user("alice@example.COM"))
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_json_and_times_round_trip(engine):
    data = {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}, "n": [1, 2]}
    with Session(engine) as session, session.begin():
        session.add(make_user(scim_data=data))
    with Session(engine) as session:
        user = session.scalars(sa.select(User)).one()
        assert user.scim_data == data
        assert user.active is True and user.version == 1
        assert user.created_at.tzinfo is dt.UTC
        assert abs((utcnow() - user.created_at).total_seconds()) < 60


def test_deleting_a_user_removes_memberships_and_sessions(engine):
    with Session(engine) as session, session.begin():
        user = make_user()
        group = Group(display_name="Staff", display_name_key="staff")
        session.add_all([user, group])
        session.flush()
        session.add(GroupMember(group_id=group.id, user_id=user.id))
        session.add(
            SsoSession(id_hash="h" * 64, user_id=user.id, expires_at=utcnow() + dt.timedelta(hours=1), csrf_token="c")
        )
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(User))
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(GroupMember)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(SsoSession)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Group)) == 1


def test_a_failed_transaction_leaves_nothing_behind(engine):
    with pytest.raises(sa.exc.IntegrityError):
        with Session(engine) as session, session.begin():
            session.add(make_user("bob@example.com"))
            session.flush()
            session.add(GroupMember(group_id="no-such-group", user_id="no-such-user"))
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_request_scoped_session_commits_or_aborts_with_the_request(make_app, database_url, plugin_dir):
    (plugin_dir / "gw_test_writer.py").write_text(
        "from gateway.db.models import User\n"
        "def write(request):\n"
        "    name = request.params['name']\n"
        "    request.dbsession.add(User(user_name=name, user_name_key=name.lower()))\n"
        "    request.dbsession.flush()\n"
        "    if 'fail' in request.params:\n"
        "        raise RuntimeError('boom')\n"
        "    return {'ok': True}\n"
        "def gateway_pyramid_configure(config):\n"
        "    config.add_route('writer', '/write')\n"
        "    config.add_view(write, route_name='writer', renderer='json')\n"
    )
    app = make_app(**{"sqlalchemy.url": database_url, "gateway.plugins": "entra gw_test_writer"})
    app.get("/write", {"name": "carol"})
    with pytest.raises(RuntimeError):
        app.get("/write", {"name": "dave", "fail": "1"})
    engine = app.app.registry.db_engine
    with Session(engine) as session:
        assert session.scalars(sa.select(User.user_name)).all() == ["carol"]


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url):
    from gateway.db import create_engine

    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_the_apps_sqlite_wal_is_checkpointed_by_a_thread_not_by_commits(sqlite_url, monkeypatch):
    import os
    import threading
    import time

    from gateway.db import create_engine, sqlite_checkpoints

    path = sa.engine.make_url(sqlite_url).database
    threads_before = set(threading.enumerate())
    monkeypatch.setattr(sqlite_checkpoints, "INTERVAL", 0.05)
    engine = create_engine(sqlite_url, checkpoint_in_background=True)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == sqlite_checkpoints.SAFETY_NET_PAGES
    checkpointer = [t for t in set(threading.enumerate()) - threads_before if t.name.startswith("sqlite-checkpoints")]
    assert len(checkpointer) == 1
    size = os.path.getsize(path)
    # About 600 pages: under every commit-time threshold, so only the thread can copy them over.
    with Session(engine) as session, session.begin():
        session.add_all(make_user(f"ckpt{i}", scim_data={"pad": "x" * 2000}) for i in range(1000))
    deadline = time.monotonic() + 5
    while os.path.getsize(path) <= size + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.getsize(path) > size + 1_000_000  # the rows reached the database file itself
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User).where(User.user_name.like("ckpt%"))) == 1000
    # One thread per database serves every engine of the app on it, until the last is disposed.
    second = create_engine(sqlite_url, checkpoint_in_background=True)
    engine.dispose()
    checkpointer[0].join(timeout=0.5)
    assert checkpointer[0].is_alive()
    second.dispose()
    # Gone, with its connection, by the time dispose() returns: the server
    # forks its workers next, and no SQLite connection may be open then.
    assert not checkpointer[0].is_alive()
    # The CLI's short-lived engines keep SQLite's default.
    plain = create_engine(sqlite_url)
    with plain.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    plain.dispose()


def _writes_from_another_thread(engine, name: str, timeout: float = 5.0) -> bool:
    """True when a write from a fresh thread commits within ``timeout`` (the queue is free)."""
    import threading

    done = threading.Event()

    def write():
        with Session(engine) as session, session.begin():
            session.add(make_user(name))
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(timeout)


@pytest.mark.parametrize("ending", ["failed_commit", "closed_without_commit", "invalidated"])
def test_sqlite_writer_queue_is_freed_however_a_transaction_ends(sqlite_url, ending):
    # This process's SQLite writers take turns on a lock (gateway/db/sqlite_writer.py);
    # a transaction that ends any other way than a clean commit must free it too.
    from gateway.db import create_engine

    engine = create_engine(sqlite_url)
    with Session(engine) as session, session.begin():
        session.add(make_user("first@example.com"))
    if ending == "failed_commit":
        with pytest.raises(sa.exc.IntegrityError):
            with Session(engine) as session, session.begin():
                session.add(make_user("FIRST@example.com"))
    else:
        connection = engine.connect()
        transaction = connection.begin()
        connection.execute(
            sa.insert(User).values(
                id="u-2",
                user_name="x",
                user_name_key="x",
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
        if ending == "invalidated":
            # As after a lost connection: SQLAlchemy invalidates it, the caller rolls back.
            connection.invalidate()
            transaction.rollback()
        connection.close()
    assert _writes_from_another_thread(engine, "second@example.com")
    engine.dispose()


def _lock_file_is_free(database_path: str) -> bool:
    import fcntl
    import os

    fd = os.open(f"{database_path}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock this descriptor took
    return True


def test_sqlite_writer_lock_is_held_until_sqlite_has_committed(sqlite_url):
    # SQLAlchemy's commit event fires before the DBAPI commit; freeing the
    # lock there would let the next writer meet SQLite's own write lock.
    import sqlite3

    from gateway.db import create_engine

    seen = []

    class Watched(sqlite3.Connection):
        def commit(self):
            seen.append(("commit", _lock_file_is_free(path)))
            super().commit()

        def rollback(self):
            seen.append(("rollback", _lock_file_is_free(path)))
            super().rollback()

    engine = create_engine(sqlite_url, connect_args={"factory": Watched})
    path = engine.url.database
    with Session(engine) as session, session.begin():
        session.add(make_user("first@example.com"))
    # (The pool also rolls back connections it hands out and takes back: nothing held then.)
    assert [free for call, free in seen if call == "commit"] == [False]
    assert _lock_file_is_free(path)
    seen.clear()
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        session.add(make_user("second@example.com"))
        session.flush()
        raise RuntimeError("the request failed")
    assert ("rollback", False) in seen
    assert _lock_file_is_free(path)
    engine.dispose()


def test_sqlite_writers_of_several_processes_queue_on_a_file_lock(sqlite_url):
    # Worker processes wait for each other's write transactions on a kernel
    # lock (woken at once) rather than in SQLite's sleeping busy handler. An
    # open file description stands in for the other process: flock locks
    # conflict between descriptions just as between processes.
    from gateway.db import create_engine

    engine = create_engine(sqlite_url)
    path = engine.url.database
    with Session(engine) as session, session.begin():
        session.scalar(sa.select(sa.func.count()).select_from(User))
        assert _lock_file_is_free(path), "a reading transaction must not hold the writers' lock"
        session.add(make_user("writer@example.com"))
        session.flush()
        assert not _lock_file_is_free(path)
    assert _lock_file_is_free(path)
    with pytest.raises(sa.exc.IntegrityError):
        with Session(engine) as session, session.begin():
            session.add(make_user("WRITER@example.com"))
    assert _lock_file_is_free(path), "a failed transaction must free it too"
    engine.dispose()


def test_a_writer_held_up_by_another_process_gives_up_like_sqlites_busy_timeout(sqlite_url, monkeypatch):
    import fcntl
    import os

    from gateway.db import create_engine, sqlite_writer

    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT", 0.3)
    engine = create_engine(sqlite_url)
    other = os.open(f"{engine.url.database}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # "another process" is in a write transaction
    try:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with Session(engine) as session, session.begin():
                session.add(make_user("waiting@example.com"))
    finally:
        os.close(other)
    with Session(engine) as session, session.begin():  # the lock is free again, and so is this process's queue
        session.add(make_user("waiting@example.com"))
    engine.dispose()


# ---------------------------------------------------------------- PostgreSQL pool: ping only rested connections


def _backend_pid(connection) -> int:
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


@pytest.mark.postgres
def test_a_rested_pooled_connection_that_died_is_replaced_before_use(postgres_url, monkeypatch):
    import gateway.db as db

    engine = db.create_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            pid = _backend_pid(connection)
        with engine.connect() as connection:
            assert _backend_pid(connection) == pid  # pooled
        # The database drops the idle connection (a restart, a firewall's idle timeout).
        killer = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with killer.connect() as connection:
            assert connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
        killer.dispose()
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # as if it had rested
        with engine.connect() as connection:
            assert _backend_pid(connection) != pid
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_used_moments_ago_is_not_pinged(postgres_url, monkeypatch):
    import gateway.db as db

    engine = db.create_engine(postgres_url, pool_size=1, max_overflow=0)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(
        engine.dialect, "do_ping", lambda dbapi_connection: pings.append(1) or real_ping(dbapi_connection)
    )
    try:
        for _ in range(3):
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        assert pings == [1]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_notify_migrations_downgrade_and_upgrade_again(postgres_url):
    from alembic import command

    function = sa.text("SELECT pg_get_functiondef('gateway_notify_membership'::regproc)")

    triggers = sa.text(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relname IN ('groups', 'group_members') AND c.relnamespace = current_schema()::regnamespace"
        " AND NOT t.tgisinternal ORDER BY tgname"
    )
    engine = sa.create_engine(postgres_url)
    try:
        cfg = migrate.alembic_config(postgres_url)
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            assert connection.execute(triggers).scalars().all() == [
                "group_members_added_notify_identity",
                "group_members_notify_identity",
                "group_members_removed_notify_identity",
                "groups_notify_identity",
            ]
            assert "IF TG_OP = 'INSERT'" in connection.execute(function).scalar()  # 0007: no joins for INSERT
            users = sa.text(
                "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE t.tgname = 'users_notify_identity' AND c.relnamespace = current_schema()::regnamespace"
            )
            assert "UPDATE OF id, user_name" in connection.execute(users).scalar()  # 0011
            command.downgrade(cfg, "0010")
            assert "AFTER DELETE OR UPDATE OR TRUNCATE ON" in connection.execute(users).scalar()
            command.downgrade(cfg, "0006")
            assert "TG_OP" not in connection.execute(function).scalar()
            command.downgrade(cfg, "0005")
            assert connection.execute(triggers).scalars().all() == [
                "group_members_notify_identity",
                "groups_notify_identity",
            ]
            command.upgrade(cfg, "head")
            assert len(connection.execute(triggers).scalars().all()) == 4
            assert "UPDATE OF id, user_name" in connection.execute(users).scalar()
            assert "IF TG_OP = 'INSERT'" in connection.execute(function).scalar()
    finally:
        engine.dispose()
