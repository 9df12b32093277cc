"""``/admin/sessions``: every live session, filterable by user, and "End session" (here and on a user's page)."""

from __future__ import annotations

import sqlalchemy as sa

from ...db.models import SsoSession, User
from .. import actions, done
from ..access import admin_view
from .users import live_sessions, refused_page

PAGE_SIZE = 100
#: Offset paging is fine for live sessions, but bounded.
MAX_OFFSET = 10_000


@admin_view(route_name="admin.sessions", renderer="admin/sessions.html")
def sessions(request):
    who = request.GET.get("user", "").strip()[:256]
    try:
        offset = min(max(int(request.GET.get("offset", 0)), 0), MAX_OFFSET)
    except ValueError:
        offset = 0
    where = []
    if who:
        # A userName (case-insensitively) or a user id.
        where.append(
            SsoSession.user_id.in_(sa.select(User.id).where(sa.or_(User.user_name_key == who.lower(), User.id == who)))
        )
    rows = live_sessions(request, where, limit=PAGE_SIZE + 1, offset=offset)
    keep = {"user": who} if who else {}
    return {
        "who": who,
        "sessions": rows[:PAGE_SIZE],
        "show_user": True,
        "offset": offset,
        "next_page": request.route_path("admin.sessions", _query={**keep, "offset": offset + PAGE_SIZE})
        if len(rows) > PAGE_SIZE and offset + PAGE_SIZE <= MAX_OFFSET
        else None,
        "first_page": request.route_path("admin.sessions", _query=keep) if offset else None,
    }


@admin_view(route_name="admin.sessions.end", request_method="POST", sensitive=True)
def end_session(request):
    """End one session (another person's or one's own); the form's page shows the result."""
    try:
        actions.end_session(actions.Actor.from_request(request), request.POST.get("session", "")[:64])
    except actions.ActionRefused as exc:
        return refused_page(request, str(exc), request.route_path("admin.sessions"))
    return done(request, "session-ended")
