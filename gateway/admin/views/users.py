"""``/admin/users`` (search) and ``/admin/users/{id}`` (everything about one person), with their actions."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound

from ...db.models import AuditEvent, Group, GroupMember, ProvisioningLogEntry, SigninTrace, SsoSession, User, utcnow
from ...provisioning.groups import admin_reasons
from ...provisioning.profile import STORED_FIELDS
from .. import actions, done
from ..access import admin_view
from ..search import PAGE_SIZE, SOURCES, search_users

#: How much history the user page shows, newest first.
HISTORY = 50


def live_sessions(request, where, limit: int = 200, offset: int = 0) -> list[SsoSession]:
    """Open, unexpired, not idle sessions matching ``where``, newest first."""
    now = utcnow()
    idle = dt.timedelta(seconds=request.registry.gateway_settings.session.idle_timeout)
    return list(
        request.dbsession.scalars(
            sa.select(SsoSession)
            .where(
                SsoSession.ended_at.is_(None),
                SsoSession.expires_at > now,
                SsoSession.last_seen_at > now - idle,
                *where,
            )
            .order_by(SsoSession.created_at.desc(), SsoSession.id_hash)
            .limit(limit)
            .offset(offset)
        )
    )


@admin_view(route_name="admin.users", renderer="admin/users.html")
def users(request):
    q = request.GET.get("q", "")[:256]
    state = request.GET.get("state", "")
    source = request.GET.get("source", "")
    after = request.GET.get("after") or None
    page = search_users(request.dbsession, q, state=state, source=source, after=after)
    keep = {k: v for k, v in (("q", q), ("state", state), ("source", source)) if v}
    return {
        "q": q,
        "state": state,
        "source": source,
        "sources": SOURCES,
        "page": page,
        "page_size": PAGE_SIZE,
        "first_page": request.route_path("admin.users", _query=keep) if after else None,
        "next_page": request.route_path("admin.users", _query={**keep, "after": page.next_after})
        if page.next_after
        else None,
    }


def get_user(request) -> User:
    user = request.dbsession.get(User, request.matchdict["id"][:36])
    if user is None:
        raise HTTPNotFound()
    return user


@admin_view(route_name="admin.user", renderer="admin/user.html")
def user(request):
    user = get_user(request)
    dbsession = request.dbsession
    settings = request.registry.gateway_settings
    groups = dbsession.execute(
        sa.select(Group.id, Group.display_name, Group.external_id)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user.id)
        .order_by(Group.display_name_key)
    ).all()
    # A refused sign-in of someone with no record yet has only a name.
    events = dbsession.scalars(
        sa.select(AuditEvent)
        .where(
            AuditEvent.target_type == "user",
            sa.or_(
                AuditEvent.target_id == user.id,
                sa.and_(AuditEvent.target_id.is_(None), AuditEvent.target_name == user.user_name),
            ),
        )
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(HISTORY)
    ).all()
    traces = dbsession.scalars(
        sa.select(SigninTrace).where(SigninTrace.user_id == user.id).order_by(SigninTrace.at.desc()).limit(HISTORY)
    ).all()
    provisioning = dbsession.scalars(
        sa.select(ProvisioningLogEntry)
        .where(ProvisioningLogEntry.resource_id == user.id)
        .order_by(ProvisioningLogEntry.at.desc())
        .limit(HISTORY)
    ).all()
    profile = [(name, getattr(user, name)) for name in STORED_FIELDS]
    return {
        "user": user,
        "profile": profile,
        "custom": sorted((user.attributes or {}).items()),
        "groups": groups,
        "sessions": live_sessions(request, [SsoSession.user_id == user.id]),
        "events": events,
        "traces": traces,
        "provisioning": provisioning,
        "admin_reasons": admin_reasons(dbsession, settings, user),
        "first_login": user.provisioned_by == "saml",
        "scim_is_source": actions.SCIM_IS_SOURCE,
        "is_me": request.identity.user_id == user.id,
    }


#: action in the URL -> (function, notice)
USER_ACTIONS = {
    "sign-out-everywhere": (actions.sign_out_everywhere, "signed-out-everywhere"),
    "deactivate": (actions.deactivate, "deactivated"),
    "reactivate": (actions.reactivate, "reactivated"),
    "grant-admin": (actions.grant_admin, "admin-granted"),
    "revoke-admin": (actions.revoke_admin, "admin-revoked"),
}


@admin_view(route_name="admin.user.action", request_method="POST", sensitive=True)
def user_action(request):
    """Sign out everywhere, deactivate, reactivate, grant or revoke admin: all sensitive."""
    user = get_user(request)
    action = USER_ACTIONS.get(request.matchdict["action"])
    if action is None:
        raise HTTPNotFound()
    function, notice = action
    back = request.route_path("admin.user", id=user.id)
    try:
        function(actions.Actor.from_request(request), user)
    except actions.ActionRefused as exc:
        return refused_page(request, str(exc), back)
    return done(request, notice, back)


def refused_page(request, message: str, back: str):
    from ...templating import render_page

    return render_page(request, "admin/refused.html", {"message": message, "back": back}, status=409)
