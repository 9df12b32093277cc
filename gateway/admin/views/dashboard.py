"""``/admin``: mode, counts, sign-ins and refusals in the last 24 hours, IdP health, what is wrong now."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ...db.models import AuditEvent, Group, SsoSession, User, utcnow
from .. import health
from ..access import admin_view

WINDOW = dt.timedelta(hours=24)


def user_counts(dbsession) -> dict:
    """Users by state and by who created them: one aggregate over the table."""
    rows = dbsession.execute(
        sa.select(User.provisioned_by, User.active, sa.func.count()).group_by(User.provisioned_by, User.active)
    ).all()
    counts = {"total": 0, "active": 0, "inactive": 0, "by_source": {}}
    for source, active, count in rows:
        counts["total"] += count
        counts["active" if active else "inactive"] += count
        counts["by_source"][source] = counts["by_source"].get(source, 0) + count
    return counts


def live_sessions_count(request, now: dt.datetime) -> int:
    idle = dt.timedelta(seconds=request.registry.gateway_settings.session.idle_timeout)
    return request.dbsession.scalar(
        sa.select(sa.func.count())
        .select_from(SsoSession)
        .where(SsoSession.ended_at.is_(None), SsoSession.expires_at > now, SsoSession.last_seen_at > now - idle)
    )


def signin_counts(request, since: dt.datetime) -> tuple[int, list[tuple[str, int]]]:
    """(sign-ins, [(refusal reason, count)]) since ``since``, from the audit trail and
    from every source in ``registry.admin_refusal_sources`` (callables taking
    the request and ``since``, returning (reason, count) pairs)."""
    dbsession = request.dbsession
    signed_in = dbsession.scalar(
        sa.select(sa.func.count()).where(AuditEvent.at >= since, AuditEvent.action == "user.signed_in")
    )
    reason = AuditEvent.details["reason"].as_string()
    refusals: dict[str, int] = {}
    for text, count in dbsession.execute(
        sa.select(reason, sa.func.count())
        .where(AuditEvent.at >= since, AuditEvent.action == "user.denied")
        .group_by(reason)
    ):
        refusals[text or "(no reason recorded)"] = refusals.get(text or "(no reason recorded)", 0) + count
    for source in request.registry.admin_refusal_sources:
        for text, count in source(request, since):
            refusals[text] = refusals.get(text, 0) + count
    return signed_in or 0, sorted(refusals.items(), key=lambda item: (-item[1], item[0]))


@admin_view(route_name="admin.dashboard", renderer="admin/dashboard.html")
def dashboard(request):
    now = utcnow()
    settings = request.registry.gateway_settings
    signed_in, refusals = signin_counts(request, now - WINDOW)
    return {
        "modes": sorted(settings.provisioning.mode),
        "users": user_counts(request.dbsession),
        "groups": request.dbsession.scalar(sa.select(sa.func.count()).select_from(Group)),
        "sessions": live_sessions_count(request, now),
        "signed_in": signed_in,
        "refusals": refusals,
        "refused": sum(count for _, count in refusals),
        "idp": health.idp_health(request, now),
        "problems": health.problems(request),
        "admin_groups": settings.gateway.admin_groups,
    }
