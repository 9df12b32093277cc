"""``/admin/audit``: the audit trail, filterable, and exported as CSV or JSON lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response

from ...db.models import AuditEvent, User
from ..access import admin_view

PAGE_SIZE = 100
FILTERS = ("actor", "event", "user", "correlation_id", "since", "until")
COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "source",
    "correlation_id",
    "details",
)


def _prefix(column, value: str):
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


class BadFilter(ValueError):
    """A filter value the page cannot use; the message says what it expected."""


def parse_time(value: str, end: bool = False) -> dt.datetime:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``, in UTC; a date alone ``until`` means the end of that day."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadFilter(f"Expected a date such as 2026-12-06 or 2026-12-06T14:30, got {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    if end and len(value.strip()) == 10:
        parsed += dt.timedelta(days=1)
    return parsed


def audit_filters(request, values: dict) -> list:
    """SQL conditions for the filters the page (or the export link) carries."""
    where = []
    if values.get("actor"):
        where.append(_prefix(AuditEvent.actor, values["actor"]))
    if values.get("event"):
        where.append(_prefix(AuditEvent.action, values["event"]))
    if values.get("user"):
        who = values["user"]
        user_id = request.dbsession.scalar(
            sa.select(User.id).where(sa.or_(User.id == who, User.user_name_key == who.lower()))
        )
        # A stored user's events by id (indexed); a refused person with no record by the name they gave.
        match = AuditEvent.target_id == user_id if user_id else AuditEvent.target_name == who
        where.append(sa.and_(AuditEvent.target_type == "user", match))
    if values.get("correlation_id"):
        where.append(AuditEvent.correlation_id == values["correlation_id"])
    if values.get("since"):
        where.append(AuditEvent.at >= parse_time(values["since"]))
    if values.get("until"):
        where.append(AuditEvent.at < parse_time(values["until"], end=True))
    return where


def _values(request) -> dict:
    return {name: request.GET.get(name, "").strip()[:256] for name in FILTERS}


@admin_view(route_name="admin.audit", renderer="admin/audit.html")
def audit(request):
    values = _values(request)
    keep = {k: v for k, v in values.items() if v}
    try:
        where = audit_filters(request, values)
    except BadFilter as exc:
        request.response.status_int = 400
        return {
            "filters": values,
            "events": [],
            "error": str(exc),
            "first_page": None,
            "next_page": None,
            "csv_url": None,
            "jsonl_url": None,
        }
    before = request.GET.get("before", "")
    if before.isdigit():
        where.append(AuditEvent.id < int(before))
    events = request.dbsession.scalars(
        sa.select(AuditEvent).where(*where).order_by(AuditEvent.id.desc()).limit(PAGE_SIZE + 1)
    ).all()
    more = len(events) > PAGE_SIZE
    events = events[:PAGE_SIZE]
    return {
        "filters": values,
        "events": events,
        "error": None,
        "first_page": request.route_path("admin.audit", _query=keep) if before else None,
        "next_page": request.route_path("admin.audit", _query={**keep, "before": events[-1].id}) if more else None,
        "csv_url": request.route_path("admin.audit.export", format="csv", _query=keep),
        "jsonl_url": request.route_path("admin.audit.export", format="jsonl", _query=keep),
    }


def _row(event) -> dict:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_name": event.target_name,
        "source": event.source,
        "correlation_id": event.correlation_id,
        "details": event.details or {},
    }


def _csv_line(row: dict) -> bytes:
    buffer = io.StringIO()
    values = [json.dumps(row[c], sort_keys=True) if c == "details" else row[c] for c in COLUMNS]
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
    values = ["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v for v in values]
    csv.writer(buffer).writerow(["" if v is None else v for v in values])
    return buffer.getvalue().encode("utf-8")


def _stream(engine, statement, line):
    """Rows read on a connection of their own while the response is sent (the
    request's transaction has ended by then), in batches: any size exports in
    constant memory."""
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=1000).execute(statement)
        for row in result:
            yield line(_row(row))


@admin_view(route_name="admin.audit.export")
def export(request):
    """The filtered trail, oldest first: ``export.csv`` or ``export.jsonl``."""
    kind = request.matchdict["format"]
    if kind not in ("csv", "jsonl"):
        raise HTTPNotFound()
    try:
        where = audit_filters(request, _values(request))
    except BadFilter as exc:
        return Response(str(exc) + "\n", status=400, content_type="text/plain", charset="utf-8")
    statement = sa.select(*[getattr(AuditEvent, c) for c in COLUMNS]).where(*where).order_by(AuditEvent.id)
    if kind == "csv":
        header = [(",".join(COLUMNS) + "\r\n").encode()]
        line, content_type = _csv_line, "text/csv"
    else:
        header = []
        line, content_type = (
            (lambda row: (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")),
            "application/x-ndjson",
        )

    def body():
        yield from header
        yield from _stream(request.registry.db_engine, statement, line)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        app_iter=body(),
        content_type=content_type,
        charset="utf-8",
        content_disposition=f'attachment; filename="gateway-audit-{stamp}.{kind}"',
    )
