"""Values read at scrape time: the database's counts, the IdP's certificates, the build.

These describe the deployment, not one worker: read fresh by the worker
that answers the scrape, they are never stale and never counted twice,
however many workers there are or were.
"""

from __future__ import annotations

import datetime as dt
import logging
from importlib import metadata as distribution

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from ..db.models import ScimToken, SsoSession, User, utcnow

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return distribution.version("entra-identity-gateway")
    except distribution.PackageNotFoundError:
        return "unknown"


VERSION = _version()


class ScrapeCollector:
    """A prometheus_client collector over one app's registry."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        build = GaugeMetricFamily("gateway_build_info", "The gateway's version (always 1).", labels=["version"])
        build.add_metric([VERSION], 1)
        yield build
        yield from self._database()
        yield from self._certificates()

    def _database(self):
        settings = self.registry.gateway_settings.session
        now = utcnow()
        live = sa.and_(
            SsoSession.ended_at.is_(None),
            SsoSession.expires_at > now,
            SsoSession.last_seen_at > now - dt.timedelta(seconds=settings.idle_timeout),
        )
        try:
            with self.registry.db_engine.connect() as connection:
                sessions = connection.execute(sa.select(sa.func.count()).select_from(SsoSession).where(live)).scalar()
                users = dict(connection.execute(sa.select(User.active, sa.func.count()).group_by(User.active)).all())
                tokens = connection.execute(
                    sa.select(ScimToken.name, ScimToken.last_used_at).where(
                        ScimToken.revoked_at.is_(None), ScimToken.last_used_at.is_not(None)
                    )
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            # The counters still matter most when the database is down: leave these out.
            log.warning("metrics: cannot read the database: %s", exc.__class__.__name__)
            return
        yield GaugeMetricFamily(
            "gateway_sessions_active", "Browser sessions neither ended, expired nor idle too long.", value=sessions
        )
        family = GaugeMetricFamily("gateway_users", "Users by state.", labels=["state"])
        family.add_metric(["active"], users.get(True, 0))
        family.add_metric(["inactive"], users.get(False, 0))
        yield family
        family = GaugeMetricFamily(
            "gateway_scim_token_last_used_timestamp_seconds",
            "When each SCIM token was last used (Unix time).",
            labels=["token"],
        )
        for name, last_used in tokens:
            family.add_metric([name], last_used.timestamp())
        yield family

    def _certificates(self):
        provider = getattr(self.registry, "saml_sp", None)
        store = getattr(provider, "store", None)
        info = store.info if store is not None else None
        if store is not None and info is None and store.last_error is None:
            # A worker that has not needed it yet loads it (as /readyz does); one
            # whose load failed does not try again on every scrape.
            info = store.current()
        family = GaugeMetricFamily(
            "gateway_idp_certificate_not_after_timestamp_seconds",
            "When each IdP signing certificate expires (Unix time), by SHA-256 fingerprint prefix.",
            labels=["fingerprint"],
        )
        for cert in info.certs if info is not None else ():
            not_after = cert.not_after
            if not_after.tzinfo is None:
                not_after = not_after.replace(tzinfo=dt.UTC)
            family.add_metric([cert.fingerprint], not_after.timestamp())
        yield family
