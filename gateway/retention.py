"""Expired sign-in traces, provisioning log rows, test sign-ins, ended or
expired sessions and old audit events are deleted.

Nothing grows without something being written, so the processes that write
new rows also delete the expired ones: at most once a minute per process
(:meth:`Retention.maybe_prune`), a bounded batch per table in a short
transaction of its own, so no request ever waits on it. ``gateway CONFIG
prune`` deletes everything expired at once (for a cron job, or after a
retention was shortened).

The windows are ``admin.trace_retention_days``,
``admin.provisioning_log_retention_days``,
``admin.session_retention_days`` (counted from the session's expiry, so a
session that was signed out early goes no later than one that ran out) and
``admin.audit_retention_days``; a test sign-in row goes an hour after its
link or request expired.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import sqlalchemy as sa

from .db.models import AuditEvent, ProvisioningLogEntry, SigninTest, SigninTrace, SsoSession, utcnow

log = logging.getLogger(__name__)

#: Seconds between two opportunistic prunes in one process.
PRUNE_EVERY = 60.0
#: Rows deleted per table and statement: bounded, so a prune after a long
#: pause does not hold the write lock for long.
BATCH = 5000
#: How long a used or expired test sign-in row stays (its trace stays longer).
KEEP_TESTS = dt.timedelta(hours=1)


def cutoffs(settings, now: dt.datetime | None = None) -> dict:
    """(table, condition of the rows to delete) for each pruned table; every
    condition can be found through an index."""
    now = now or utcnow()
    admin = settings.admin
    sessions = SsoSession.__table__
    session_oldest = now - dt.timedelta(days=admin.session_retention_days)
    return {
        "signin_traces": (
            SigninTrace.__table__,
            SigninTrace.__table__.c.at < now - dt.timedelta(days=admin.trace_retention_days),
        ),
        "provisioning_log": (
            ProvisioningLogEntry.__table__,
            ProvisioningLogEntry.__table__.c.at < now - dt.timedelta(days=admin.provisioning_log_retention_days),
        ),
        "signin_tests": (SigninTest.__table__, SigninTest.__table__.c.expires_at < now - KEEP_TESTS),
        # Only created_at is indexed: a session created more than session.max_age
        # before the cut-off cannot have expired after it, so that bound finds
        # the candidates and expires_at decides (a session made under a longer
        # max_age waits until it has expired long enough).
        "sessions": (
            sessions,
            sa.and_(
                sessions.c.created_at < session_oldest - dt.timedelta(seconds=settings.session.max_age),
                sessions.c.expires_at < session_oldest,
            ),
        ),
        "audit_events": (
            AuditEvent.__table__,
            AuditEvent.__table__.c.at < now - dt.timedelta(days=admin.audit_retention_days),
        ),
    }


def prune_batch(
    connection: sa.Connection, settings, now: dt.datetime | None = None, batch: int = BATCH
) -> dict[str, int]:
    """Delete up to ``batch`` expired rows of each table; the counts deleted."""
    deleted = {}
    for name, (table, condition) in cutoffs(settings, now).items():
        key = list(table.primary_key.columns)[0]
        expired = sa.select(key).where(condition).limit(batch)
        deleted[name] = connection.execute(sa.delete(table).where(key.in_(expired.scalar_subquery()))).rowcount
    return deleted


def prune_all(engine: sa.Engine, settings, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete every expired row, a batch per transaction; the counts deleted."""
    total: dict[str, int] = {}
    while True:
        with engine.begin() as connection:
            deleted = prune_batch(connection, settings, now)
        for name, count in deleted.items():
            total[name] = total.get(name, 0) + count
        if all(count < BATCH for count in deleted.values()):
            return total


class Retention:
    """``registry.retention``: the opportunistic prune, at most once a minute per process."""

    def __init__(self, registry):
        self.engine = registry.db_engine
        self.settings = registry.gateway_settings
        self._last = 0.0
        self._lock = threading.Lock()

    def maybe_prune(self) -> None:
        """Prune one batch if a minute has passed since this process last did. Never raises."""
        now = time.monotonic()
        if now - self._last < PRUNE_EVERY or not self._lock.acquire(blocking=False):
            return
        try:
            self._last = now
            with self.engine.begin() as connection:
                deleted = prune_batch(connection, self.settings)
            if any(deleted.values()):
                log.info("retention: deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))
        except Exception:  # noqa: BLE001 - housekeeping: the next minute tries again
            log.warning("retention: could not delete expired rows", exc_info=True)
        finally:
            self._lock.release()


_CREATE = threading.Lock()


def retention(registry) -> Retention:
    """The registry's :class:`Retention`, made on first use."""
    found = getattr(registry, "retention", None)
    if found is None:
        with _CREATE:
            found = getattr(registry, "retention", None)
            if found is None:
                found = registry.retention = Retention(registry)
    return found


def cmd_prune(args) -> int:
    """``gateway CONFIG prune``: delete every expired trace, log row, test sign-in, session and audit event now."""
    from .cli import load_raw_settings
    from .db import create_engine
    from .settings import parse_settings

    settings = parse_settings(load_raw_settings(args.config_uri))
    engine = create_engine(settings.database_url)
    try:
        deleted = prune_all(engine, settings)
    finally:
        engine.dispose()
    admin = settings.admin
    print(
        f"deleted {deleted['signin_traces']} sign-in traces older than {admin.trace_retention_days} days,"
        f" {deleted['provisioning_log']} provisioning log rows older than"
        f" {admin.provisioning_log_retention_days} days, {deleted['signin_tests']} expired test sign-ins,"
        f" {deleted['sessions']} sessions expired more than {admin.session_retention_days} days ago,"
        f" {deleted['audit_events']} audit events older than {admin.audit_retention_days} days"
    )
    return 0
