"""``gateway CONFIG users list|show USERNAME``: who is here, and what happened to them.

Reads the database the ini names without building the app (like ``token``),
so it works while the service is down. Read-only; the commands that change a
user (``grant-admin``, ``sign-out``, ``deactivate``...) are in gateway/admin/cli.py.
"""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..db.models import AuditEvent, Group, GroupMember, SsoSession, User, utcnow
from .profile import STORED_FIELDS

#: How many audit events ``users show`` prints, newest first.
AUDIT_EVENTS = 20


def add_users_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="every user: userName, active, admin, how provisioned, email, last sign-in")
    show = sub.add_parser("show", help="one user's profile, groups, sessions and last 20 audit events")
    show.add_argument("user_name", metavar="USERNAME", help="the userName, case-insensitively")
    # What the admin console changes (grant-admin, sign-out, deactivate, ...).
    from ..admin.cli import add_admin_actions

    add_admin_actions(sub)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _table(rows: list[tuple], header: tuple, indent: str = "") -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print(indent + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cmd_users(args) -> int:
    from ..admin.cli import ACTIONS, run
    from ..cli import load_raw_settings

    if args.users_command in ACTIONS:
        return run(args)
    from ..db import create_engine
    from ..settings import parse_settings

    settings = parse_settings(load_raw_settings(args.config_uri))
    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as session:
            if args.users_command == "list":
                return list_users(session)
            return show_user(session, args.user_name)
    finally:
        engine.dispose()


def list_users(session) -> int:
    users = session.scalars(sa.select(User).order_by(User.user_name_key)).all()
    if not users:
        print("no users yet: they come from SCIM provisioning or their first sign-in")
        return 0
    rows = [
        (
            u.user_name,
            "yes" if u.active else "no",
            "yes" if u.is_admin else "no",
            u.provisioned_by,
            u.email or "-",
            u.display_name or "-",
            _when(u.last_sign_in_at),
        )
        for u in users
    ]
    _table(rows, ("userName", "active", "admin", "provisioned", "email", "name", "last sign-in"))
    return 0


def show_user(session, user_name: str) -> int:
    user = session.scalars(sa.select(User).where(User.user_name_key == user_name.lower())).first()
    if user is None:
        print(f'error: no user with userName "{user_name}"', file=sys.stderr)
        return 1
    print(f"userName     {user.user_name}")
    print(f"id           {user.id}")
    print(f"active       {'yes' if user.active else 'no'}")
    print(
        f"admin        {'yes' if user.is_admin else 'no'}"
        + (f" (granted by {user.admin_granted_by})" if user.admin_granted_by else "")
    )
    print(f"provisioned  {user.provisioned_by}")
    print(f"externalId   {user.external_id or '-'}")
    print(f"IdP subject  {user.idp_subject or '-'}")
    print(f"created      {_when(user.created_at)}")
    print(f"updated      {_when(user.updated_at)}")
    print(f"last sign-in {_when(user.last_sign_in_at)}")

    print("\nProfile")
    for name in STORED_FIELDS:
        print(f"  {name:<13}{getattr(user, name) or '-'}")
    for name, value in sorted((user.attributes or {}).items()):
        print(f"  {'custom.' + name:<13}{value if isinstance(value, str) else json.dumps(value)}")

    groups = session.execute(
        sa.select(Group.display_name, Group.external_id)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user.id)
        .order_by(Group.display_name_key)
    ).all()
    print(f"\nGroups ({len(groups)})")
    for name, external_id in groups:
        print(f"  {name}" + (f"  [{external_id}]" if external_id and external_id != name else ""))

    now = utcnow()
    sessions = session.scalars(
        sa.select(SsoSession).where(SsoSession.user_id == user.id).order_by(SsoSession.created_at.desc()).limit(20)
    ).all()
    print(f"\nSessions ({len(sessions)}, newest first, at most 20)")
    rows = []
    for s in sessions:
        state = "ended" if s.ended_at else "expired" if s.expires_at <= now else "open"
        rows.append(
            (state, _when(s.created_at), _when(s.last_seen_at), _when(s.ended_at or s.expires_at), s.remote_addr or "-")
        )
    if rows:
        _table(rows, ("state", "started", "last seen", "ended/expires", "address"), indent="  ")

    # A refused sign-in of someone with no record yet has only a name.
    events = session.scalars(
        sa.select(AuditEvent)
        .where(
            AuditEvent.target_type == "user",
            sa.or_(
                AuditEvent.target_id == user.id,
                sa.and_(AuditEvent.target_id.is_(None), AuditEvent.target_name == user.user_name),
            ),
        )
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(AUDIT_EVENTS)
    ).all()
    print(f"\nAudit events (last {AUDIT_EVENTS}, newest first)")
    rows = [
        (
            _when(e.at),
            e.action,
            e.actor,
            e.source,
            e.correlation_id or "-",
            json.dumps(e.details, sort_keys=True) if e.details else "",
        )
        for e in events
    ]
    if rows:
        _table(rows, ("at", "action", "actor", "source", "correlation id", "details"), indent="  ")
    return 0
