"""What the dashboard and the IdP page say about the gateway's health, and what is wrong now.

Other parts of the console add their own findings: append a callable
``check(request) -> list[Problem]`` to ``registry.admin_problem_checks``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ..db.models import ScimToken, utcnow

#: A certificate this close to its not-after is a warning.
CERT_WARNING_DAYS = 30
#: A live SCIM token nobody used for this long is probably forgotten (or leaked and unused).
TOKEN_UNUSED_DAYS = 90


@dataclass(frozen=True)
class Problem:
    """One thing wrong now: ``severity`` ``bad`` (breaks sign-in or provisioning) or ``warn``."""

    severity: str
    text: str
    route_name: str | None = None


@dataclass(frozen=True)
class CertificateState:
    subject: str
    fingerprint: str
    not_after: dt.datetime
    days_left: int

    @property
    def severity(self) -> str:
        if self.days_left < 0:
            return "bad"
        return "warn" if self.days_left <= CERT_WARNING_DAYS else "ok"


@dataclass(frozen=True)
class IdpHealth:
    source: str
    entity_id: str | None
    origin: str
    fetched_at: dt.datetime | None
    last_error: str | None
    certificates: tuple[CertificateState, ...]
    refresh_seconds: int

    @property
    def loaded(self) -> bool:
        return self.entity_id is not None


def idp_health(request, now: dt.datetime | None = None) -> IdpHealth:
    """The IdP metadata in force (loaded on first use, like a sign-in would) and its certificates."""
    store = request.registry.saml_sp.store
    info = store.current()
    now = now or utcnow()
    certificates = ()
    if info is not None:
        certificates = tuple(
            CertificateState(c.subject, c.fingerprint, c.not_after, (c.not_after - now).days)
            for c in sorted(info.certs, key=lambda c: c.not_after)
        )
    return IdpHealth(
        source=store.source or "",
        entity_id=info.entity_id if info is not None else None,
        origin=store.origin,
        fetched_at=store.fetched_at,
        last_error=store.last_error,
        certificates=certificates,
        refresh_seconds=store.refresh_seconds,
    )


def idp_problems(request) -> list[Problem]:
    from ..saml.metadata import expiry_warnings

    health = idp_health(request)
    if not health.loaded:
        return [
            Problem(
                "bad",
                f"No usable IdP metadata, so nobody can sign in: {health.last_error or 'not loaded'}",
                "admin.idp",
            )
        ]
    problems = []
    if health.last_error:
        problems.append(Problem("warn", f"The last IdP metadata refresh failed: {health.last_error}", "admin.idp"))
    info = request.registry.saml_sp.store.info
    for warning in expiry_warnings(info, days=CERT_WARNING_DAYS):
        problems.append(Problem("bad" if "has expired" in warning else "warn", warning, "admin.idp"))
    return problems


def token_problems(request) -> list[Problem]:
    settings = request.registry.gateway_settings
    if "scim" not in settings.provisioning.mode:
        return []
    tokens = request.dbsession.execute(
        sa.select(ScimToken.name, ScimToken.created_at, ScimToken.last_used_at).where(ScimToken.revoked_at.is_(None))
    ).all()
    if not tokens:
        return [
            Problem(
                "warn", "SCIM is on but there is no SCIM token: create one for Entra's provisioning.", "admin.tokens"
            )
        ]
    limit = utcnow() - dt.timedelta(days=TOKEN_UNUSED_DAYS)
    problems = []
    for token in tokens:
        last = token.last_used_at or token.created_at
        if last < limit:
            used = f"last used {token.last_used_at:%Y-%m-%d}" if token.last_used_at else "never used"
            problems.append(
                Problem(
                    "warn",
                    f'SCIM token "{token.name}" is {used}, more than {TOKEN_UNUSED_DAYS} days ago: revoke it if nothing uses it.',
                    "admin.tokens",
                )
            )
    return problems


def admin_problems(request) -> list[Problem]:
    settings = request.registry.gateway_settings
    if settings.gateway.admin_groups:
        return []
    return [
        Problem(
            "warn",
            "No admin group is configured (gateway.admin_groups): admins come only from gateway.admin_users"
            " and CLI grants. Name an Entra group there so that admins are managed in Entra.",
        )
    ]


def problems(request) -> list[Problem]:
    """Everything wrong now, the breaking problems first."""
    found: list[Problem] = []
    for check in (idp_problems, token_problems, admin_problems, *request.registry.admin_problem_checks):
        found.extend(check(request))
    return sorted(found, key=lambda p: p.severity != "bad")


def includeme(config):
    config.registry.admin_problem_checks = []
