"""What the console shows about sign-ins and provisioning.

- ``/admin/signins``: sign-in traces (every refusal, every test sign-in),
  found by the reference a refusal page shows; ``/admin/signins/{id}``: one
  trace with its likely fix and, for a test sign-in, the whole report;
- ``/admin/provisioning``: the provisioning log, one row per SCIM request,
  filterable by status, token, user and time, with the last day's failures
  grouped so that a bad Entra cycle shows at a glance;
- ``/admin/test``: test sign-ins (:mod:`gateway.admin.testsignin`).

The data comes from :mod:`gateway.saml.traces` and
:mod:`gateway.scim.provlog`; this module only reads it.
"""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther

from ..db.models import ProvisioningLogEntry, ScimToken, SigninTrace, User, utcnow
from ..retention import retention
from ..saml import traces
from ..saml.traces import indent_xml
from .access import admin_view

PAGE_SIZE = 50
DAY = dt.timedelta(hours=24)
#: ``status`` filter values besides a three-digit code.
STATUS_CLASSES = {"errors": (400, 600), "2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600)}


# ------------------------------------------------------------------ sign-in traces


@admin_view(route_name="admin.signins", renderer="admin/signins.html")
def signins(request):
    retention(request.registry).maybe_prune()
    q = request.GET.get("q", "").strip()[:256]
    kind = request.GET.get("kind", "")
    kind = kind if kind in ("refusal", "test") else ""
    before = _instant(request.GET.get("before"))
    found = traces.search(request.dbsession, q or None, kind=kind or None, before=before, limit=PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    keep = {k: v for k, v in (("q", q), ("kind", kind)) if v}
    # A reference pasted from a refusal page opens its trace at once.
    exact = [t for t in found if q and q in (t.correlation_id, t.id)]
    if len(exact) == 1 and before is None:
        return HTTPSeeOther(location=request.route_url("admin.signins.trace", id=exact[0].id))
    return {
        "q": q,
        "kind": kind,
        "traces": found,
        "fixes": {t.id: traces.fix_for(request.registry, t) for t in found},
        "retention_days": request.registry.gateway_settings.admin.trace_retention_days,
        "next_page": request.route_path("admin.signins", _query={**keep, "before": found[-1].at.isoformat()})
        if more
        else None,
        "first_page": request.route_path("admin.signins", _query=keep) if before else None,
    }


@admin_view(route_name="admin.signins.trace", renderer="admin/signin.html")
def signin(request):
    trace = request.dbsession.get(SigninTrace, request.matchdict["id"][:36])
    if trace is None:
        raise HTTPNotFound()
    return {
        "trace": trace,
        "fix": traces.fix_for(request.registry, trace),
        "report": trace.report,
        "xml": indent_xml(trace.response_xml) if trace.response_xml else None,
        "keep_responses": request.registry.gateway_settings.admin.trace_keep_responses,
        "user_exists": bool(trace.user_id and request.dbsession.get(User, trace.user_id)),
    }


# ------------------------------------------------------------------ provisioning log


def _instant(value: str | None) -> dt.datetime | None:
    """A time from a query string (ISO 8601 or a datetime-local field, UTC); None if absent or bad."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip()[:40])
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _user_filter(dbsession, text: str):
    """Rows about the user ``text`` names: by id, or by userName (their id, or the name a request carried)."""
    lowered = text.lower()
    ids = [text]
    found = dbsession.scalar(sa.select(User.id).where(User.user_name_key == lowered))
    if found:
        ids.append(found)
    return sa.or_(
        ProvisioningLogEntry.resource_id.in_(ids),
        sa.func.lower(ProvisioningLogEntry.resource_name) == lowered,
    )


def provisioning_query(
    dbsession,
    *,
    status: str = "",
    token: str = "",
    user: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
):
    """The WHERE clauses of the provisioning log filters."""
    where = []
    if status in STATUS_CLASSES:
        low, high = STATUS_CLASSES[status]
        where += [ProvisioningLogEntry.status >= low, ProvisioningLogEntry.status < high]
    elif re.fullmatch(r"[1-5]\d\d", status):
        where.append(ProvisioningLogEntry.status == int(status))
    if token == "-":
        where.append(ProvisioningLogEntry.token_name.is_(None))
    elif token:
        where.append(ProvisioningLogEntry.token_name == token)
    if user:
        where.append(_user_filter(dbsession, user))
    if since is not None:
        where.append(ProvisioningLogEntry.at >= since)
    if until is not None:
        where.append(ProvisioningLogEntry.at < until)
    return where


def requests_for_user(dbsession, user_id: str, limit: int = 20) -> list[ProvisioningLogEntry]:
    """The SCIM requests that touched a user, newest first (for their page in the console)."""
    return list(
        dbsession.scalars(
            sa.select(ProvisioningLogEntry)
            .where(ProvisioningLogEntry.resource_id == user_id)
            .order_by(ProvisioningLogEntry.id.desc())
            .limit(limit)
        )
    )


def failure_summary(dbsession, since: dt.datetime, limit: int = 10) -> list:
    """The failed requests since ``since`` grouped by what went wrong, most frequent first."""
    columns = (
        ProvisioningLogEntry.method,
        ProvisioningLogEntry.resource_type,
        ProvisioningLogEntry.status,
        ProvisioningLogEntry.scim_type,
        ProvisioningLogEntry.error,
    )
    count = sa.func.count().label("occurrences")
    return list(
        dbsession.execute(
            sa.select(*columns, count, sa.func.max(ProvisioningLogEntry.at).label("last"))
            .where(ProvisioningLogEntry.at >= since, ProvisioningLogEntry.status >= 400)
            .group_by(*columns)
            .order_by(count.desc(), sa.func.max(ProvisioningLogEntry.at).desc())
            .limit(limit)
        )
    )


@admin_view(route_name="admin.provisioning", renderer="admin/provisioning.html")
def provisioning(request):
    registry = request.registry
    # This process's queued rows first, so a request just made is listed.
    provisioning_log = getattr(registry, "provisioning_log", None)
    if provisioning_log is not None:
        provisioning_log.flush()
    retention(registry).maybe_prune()
    params = request.GET
    filters = {
        "status": params.get("status", "").strip()[:8],
        "token": params.get("token", "").strip()[:128],
        "user": params.get("user", "").strip()[:256],
        "since": params.get("since", "").strip()[:40],
        "until": params.get("until", "").strip()[:40],
    }
    dbsession = request.dbsession
    where = provisioning_query(
        dbsession,
        status=filters["status"],
        token=filters["token"],
        user=filters["user"],
        since=_instant(filters["since"]),
        until=_instant(filters["until"]),
    )
    before = params.get("before", "")
    if before.isdigit():
        where.append(ProvisioningLogEntry.id < int(before))
    rows = list(
        dbsession.scalars(
            sa.select(ProvisioningLogEntry).where(*where).order_by(ProvisioningLogEntry.id.desc()).limit(PAGE_SIZE + 1)
        )
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    keep = {k: v for k, v in filters.items() if v}
    names = (
        dict(
            dbsession.execute(
                sa.select(User.id, User.user_name).where(User.id.in_({r.resource_id for r in rows if r.resource_id}))
            ).all()
        )
        if rows
        else {}
    )
    now = utcnow()
    return {
        "filters": filters,
        "rows": rows,
        "user_names": names,
        # From the tokens table (small), not a DISTINCT over the log.
        "tokens": list(dbsession.scalars(sa.select(ScimToken.name).order_by(ScimToken.name))),
        "failures": failure_summary(dbsession, now - DAY),
        "last_day": dbsession.execute(
            sa.select(sa.func.count(), sa.func.count().filter(ProvisioningLogEntry.status >= 400)).where(
                ProvisioningLogEntry.at >= now - DAY
            )
        ).one(),
        "retention_days": registry.gateway_settings.admin.provisioning_log_retention_days,
        "keeps_bodies": registry.gateway_settings.admin.provisioning_log_bodies,
        "next_page": request.route_path("admin.provisioning", _query={**keep, "before": rows[-1].id}) if more else None,
        "first_page": request.route_path("admin.provisioning", _query=keep) if before else None,
    }


def provisioning_problems(request) -> list:
    """The dashboard's "what is wrong now": SCIM requests that failed in the last hour, by the most frequent cause."""
    from .health import Problem

    failures = failure_summary(request.dbsession, utcnow() - dt.timedelta(hours=1), limit=1)
    if not failures:
        return []
    total = request.dbsession.scalar(
        sa.select(sa.func.count()).where(
            ProvisioningLogEntry.at >= utcnow() - dt.timedelta(hours=1), ProvisioningLogEntry.status >= 400
        )
    )
    top = failures[0]
    cause = f"{top.status}{' ' + top.scim_type if top.scim_type else ''}: {top.error or 'no detail'}"
    severity = "bad" if top.status >= 500 or top.status == 401 else "warn"
    return [
        Problem(severity, f"{total} SCIM requests failed in the last hour; most often {cause}", "admin.provisioning")
    ]


# ------------------------------------------------------------------ wiring


def _refusals_but_policy_denials(request, since):
    """The dashboard's refusals by reason: every refusal trace but policy denials,
    which the dashboard counts from the audit trail already."""
    _, refusals = traces.signin_summary(request.dbsession, since)
    return [(reason, count) for reason, count in refusals if reason != "denied"]


def includeme(config):
    config.add_route("admin.signins", "/admin/signins")
    config.add_route("admin.signins.trace", "/admin/signins/{id}")
    config.add_route("admin.provisioning", "/admin/provisioning")
    config.add_admin_nav("Sign-ins", "admin.signins", order=70)
    config.add_admin_nav("Provisioning", "admin.provisioning", order=80)
    config.registry.admin_refusal_sources.append(_refusals_but_policy_denials)
    config.registry.admin_problem_checks.append(provisioning_problems)
    config.scan(__name__)
    # Test sign-ins: /admin/test, the one-time links, and their answer at the ACS.
    config.include(".testsignin")
