"""Expired sign-in traces, provisioning log rows and test sign-ins are deleted; the rest stay."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway import retention
from gateway.db import create_engine
from gateway.db.models import AuditEvent, ProvisioningLogEntry, SigninTest, SigninTrace, SsoSession, User, utcnow
from gateway.settings import parse_settings


def settings(database_url, **admin):
    from conftest import SESSION_SECRET

    raw = {
        "sqlalchemy.url": database_url,
        "gateway.base_url": "http://localhost",
        "session.secret": SESSION_SECRET,
        "session.cookie_secure": "false",
    }
    raw.update({f"admin.{k}": v for k, v in admin.items()})
    return parse_settings(raw)


def fill(engine, now, ages_days):
    """One trace, one log row and one test sign-in per age (in days)."""
    with Session(engine) as session, session.begin():
        for age in ages_days:
            at = now - dt.timedelta(days=age)
            session.add(SigninTrace(at=at, kind="refusal", outcome="refused", reason=f"age{age}"))
            session.add(ProvisioningLogEntry(at=at, method="GET", path="/scim/v2/Users", status=200, duration_ms=1.0))
            session.add(SigninTest(created_by="admin:root", created_at=at, expires_at=at + dt.timedelta(hours=1)))


def counts(engine):
    with engine.connect() as connection:
        return tuple(
            connection.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (SigninTrace, ProvisioningLogEntry, SigninTest)
        )


def test_prune_deletes_what_is_older_than_each_retention(database_url):
    engine = create_engine(database_url)
    now = utcnow()
    fill(engine, now, [0, 2, 6.9, 7.1, 30])
    # Traces kept 7 days, the log 3: each table by its own setting.
    deleted = retention.prune_all(engine, settings(database_url, provisioning_log_retention_days="3"), now)
    assert deleted == {"signin_traces": 2, "provisioning_log": 3, "signin_tests": 4, "sessions": 0, "audit_events": 0}
    with engine.connect() as connection:
        reasons = connection.scalars(sa.select(SigninTrace.reason).order_by(SigninTrace.at)).all()
    assert reasons == ["age6.9", "age2", "age0"]
    assert counts(engine) == (3, 2, 1)
    engine.dispose()


def test_sessions_go_some_days_after_they_expired_and_audit_events_after_a_year(database_url):
    engine = create_engine(database_url)
    now = utcnow()
    day = dt.timedelta(days=1)
    with Session(engine) as session, session.begin():
        user = User(user_name="alice@example.com", user_name_key="alice@example.com", active=True)
        session.add(user)
        session.flush()
        # (name, created, expires, ended): max_age is 8 hours by default.
        for name, created, ended in (
            ("live", now - dt.timedelta(hours=1), None),
            ("ended-yesterday", now - day, now - day),
            ("expired-29-days", now - 29 * day, None),
            ("expired-31-days", now - 31 * day, None),
            ("signed-out-40-days", now - 40 * day, now - 40 * day),
        ):
            session.add(
                SsoSession(
                    id_hash=name.ljust(64, "x"),
                    user_id=user.id,
                    created_at=created,
                    last_seen_at=created,
                    expires_at=created + dt.timedelta(hours=8),
                    ended_at=ended,
                    csrf_token="t",
                )
            )
        for age in (1, 364, 366, 1000):
            session.add(
                AuditEvent(
                    at=now - age * day,
                    actor="scim:entra",
                    action="user.update",
                    target_type="user",
                    source="scim",
                    details={"age": age},
                )
            )
    deleted = retention.prune_all(engine, settings(database_url), now)
    assert (deleted["sessions"], deleted["audit_events"]) == (2, 2)
    with engine.connect() as connection:
        kept = connection.scalars(sa.select(SsoSession.id_hash).order_by(SsoSession.created_at)).all()
        ages = connection.scalars(sa.select(AuditEvent.details)).all()
    assert [k.rstrip("x") for k in kept] == ["expired-29-days", "ended-yesterday", "live"]
    assert sorted(a["age"] for a in ages) == [1, 364]
    # Both windows are settings.
    deleted = retention.prune_all(
        engine, settings(database_url, session_retention_days="1", audit_retention_days="30"), now
    )
    assert (deleted["sessions"], deleted["audit_events"]) == (1, 1)
    engine.dispose()


def test_a_prune_batch_is_bounded(database_url):
    engine = create_engine(database_url)
    now = utcnow()
    fill(engine, now, [10, 11, 12])
    with engine.begin() as connection:
        first = retention.prune_batch(connection, settings(database_url), now, batch=2)
    assert first["signin_traces"] == 2 and counts(engine)[0] == 1
    assert retention.prune_all(engine, settings(database_url), now)["signin_traces"] == 1
    engine.dispose()


def test_the_opportunistic_prune_runs_at_most_once_a_minute(make_app, database_url, monkeypatch):
    app = make_app(**{"sqlalchemy.url": database_url})
    registry = app.app.registry
    pruner = retention.retention(registry)
    assert retention.retention(registry) is pruner
    fill(registry.db_engine, utcnow(), [8])
    pruner.maybe_prune()
    assert counts(registry.db_engine) == (0, 0, 0)
    fill(registry.db_engine, utcnow(), [8])
    pruner.maybe_prune()  # within the minute: nothing
    assert counts(registry.db_engine) == (1, 1, 1)
    monkeypatch.setattr(retention, "PRUNE_EVERY", 0.0)
    pruner.maybe_prune()
    assert counts(registry.db_engine) == (0, 0, 0)


def test_the_opportunistic_prune_never_raises(make_app, database_url, caplog):
    app = make_app(**{"sqlalchemy.url": database_url})
    pruner = retention.retention(app.app.registry)

    class Broken:
        def begin(self):
            raise sa.exc.OperationalError("DELETE", {}, Exception("database is locked"))

    pruner.engine = Broken()
    pruner.maybe_prune()
    assert "could not delete expired rows" in caplog.text


def test_gateway_prune_from_the_shell(tmp_path, database_url):
    from scim_support import run_cli, write_ini

    ini = write_ini(tmp_path / "gateway.ini", database_url, 6543, **{"admin.trace_retention_days": "1"})
    engine = create_engine(database_url)
    fill(engine, utcnow(), [0, 1.5, 9])
    out = run_cli(ini, "prune").stdout
    assert "deleted 2 sign-in traces older than 1 days, 1 provisioning log rows older than 7 days" in out
    assert counts(engine) == (1, 2, 1)
    engine.dispose()
