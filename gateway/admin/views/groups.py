"""``/admin/groups`` and ``/admin/groups/{id}``: groups, their members, paged by name."""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound

from ...db.models import Group, GroupMember, User
from ...provisioning.groups import is_admin_group
from ..access import admin_view
from ..search import TOP

PAGE_SIZE = 50


def _bytewise(column, dbsession):
    return column.collate("C") if dbsession.get_bind().dialect.name == "postgresql" else column


@admin_view(route_name="admin.groups", renderer="admin/groups.html")
def groups(request):
    dbsession = request.dbsession
    q = request.GET.get("q", "").strip()[:256]
    after = request.GET.get("after") or None
    key = _bytewise(Group.display_name_key, dbsession)
    where = []
    if q:
        where.append(sa.or_(sa.and_(key >= q.lower(), key < q.lower() + TOP), Group.external_id == q))
    if after:
        where.append(key > after)
    rows = dbsession.execute(
        sa.select(Group.id, Group.display_name, Group.display_name_key, Group.external_id, Group.scim_data)
        .where(*where)
        .order_by(key)
        .limit(PAGE_SIZE + 1)
    ).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    counts = (
        dict(
            dbsession.execute(
                sa.select(GroupMember.group_id, sa.func.count())
                .where(GroupMember.group_id.in_([r.id for r in rows]))
                .group_by(GroupMember.group_id)
            ).all()
        )
        if rows
        else {}
    )
    settings = request.registry.gateway_settings
    keep = {"q": q} if q else {}
    return {
        "q": q,
        "groups": [
            (
                row,
                counts.get(row.id, 0),
                is_admin_group(settings, {"displayName": row.display_name, "externalId": row.external_id}),
            )
            for row in rows
        ],
        "first_page": request.route_path("admin.groups", _query=keep) if after else None,
        "next_page": request.route_path("admin.groups", _query={**keep, "after": rows[-1].display_name_key})
        if more
        else None,
    }


@admin_view(route_name="admin.group", renderer="admin/group.html")
def group(request):
    dbsession = request.dbsession
    group = dbsession.get(Group, request.matchdict["id"][:36])
    if group is None:
        raise HTTPNotFound()
    after = request.GET.get("after") or None
    key = _bytewise(User.user_name_key, dbsession)
    where = [GroupMember.group_id == group.id]
    if after:
        where.append(key > after)
    members = dbsession.execute(
        sa.select(User.id, User.user_name, User.user_name_key, User.display_name, User.email, User.active)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(*where)
        .order_by(key)
        .limit(PAGE_SIZE + 1)
    ).all()
    more = len(members) > PAGE_SIZE
    members = members[:PAGE_SIZE]
    total = dbsession.scalar(
        sa.select(sa.func.count()).select_from(GroupMember).where(GroupMember.group_id == group.id)
    )
    settings = request.registry.gateway_settings
    return {
        "group": group,
        "members": members,
        "total": total,
        "admin_group": is_admin_group(settings, {"displayName": group.display_name, "externalId": group.external_id}),
        "first_page": request.route_path("admin.group", id=group.id) if after else None,
        "next_page": request.route_path("admin.group", id=group.id, _query={"after": members[-1].user_name_key})
        if more
        else None,
    }
