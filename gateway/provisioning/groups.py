"""Group memberships from the SAML ``groups`` claim, and admins from ``gateway.admin_groups``.

Whoever provisions a user owns their groups: for a user that Entra's SCIM
created, SCIM writes are the only source of memberships and a sign-in never
touches them (a claim is a snapshot, SCIM is the live list). For a user
created at their first sign-in (``first_login``-only mode, and such users in
``scim first_login`` mode, whom SCIM does not manage) the ``groups`` claim
(Entra: group object ids, at most 150) is the truth at every sign-in: groups
are created by external id as needed and the user's memberships are set to
exactly the claim, and what that changes fires the group events a SCIM
write would (``created``, ``members_added``, ``members_removed``; actor
``user:<userName>``, source ``saml``). When Entra's group overage replaced
the claim with ``groups.link``, the memberships are left as they were and a
warning says what to do (a SAML service provider cannot call Microsoft Graph).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
import zope.sqlalchemy
from sqlalchemy.dialects import postgresql, sqlite

from ..db.models import Group, GroupMember, User, new_id, utcnow
from ..db.prepared import Prepared, session_connection
from ..events import fire_group
from ..interfaces import GroupEvent, HookContext

log = logging.getLogger(__name__)

OVERAGE_WARNING = (
    "user %s is in more groups than Entra puts in a SAML token (150), so it sent a groups.link claim"
    " instead of the groups: their memberships were left unchanged. In the Entra enterprise application,"
    ' set "Attributes & Claims > groups claim" to "Groups assigned to the application" (and assign the'
    " groups that matter), or turn on SCIM provisioning (provisioning.mode = scim first_login) so that"
    " groups come from SCIM. correlation_id=%s"
)


def scim_enabled(settings) -> bool:
    """Whether SCIM provisioning is on (``scim`` in ``provisioning.mode``)."""
    return "scim" in settings.provisioning.mode


def _insert(dbsession, model):
    dialect = dbsession.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


@dataclass(frozen=True)
class Membership:
    """One group a user is in, as the claim matching and the admin check read it."""

    group_id: str
    display_name: str | None
    display_name_key: str | None
    external_id: str | None

    def named(self, value: str) -> bool:
        """Whether a claim value names this group (external id, or display name in any case)."""
        return value == self.external_id or value.lower() == self.display_name_key


def memberships(dbsession, user_id: str) -> list[Membership]:
    """The groups ``user_id`` is in: one read at a sign-in, shared by the policy's view of
    the user, the claim's membership sync and the admin flag."""
    rows = _MEMBERSHIPS.rows(session_connection(dbsession), {"user_id": user_id})
    return [Membership(*row) for row in rows]


_MEMBERSHIPS = Prepared(
    sa.select(Group.id, Group.display_name, Group.display_name_key, Group.external_id)
    .join(GroupMember, GroupMember.group_id == Group.id)
    .where(GroupMember.user_id == sa.bindparam("user_id"))
)


def groups_for_claim(
    dbsession, values: tuple[str, ...], *, created: list | None = None, known: list[Membership] = ()
) -> list[str]:
    """Ids of the groups named by these claim values, creating the missing ones.

    A value matches a group by external id (Entra's object id) or, for
    tenants that emit names, by display name, case-insensitively. A new group
    gets the value as both: Entra sends no group names, and an admin may list
    the object id in ``gateway.admin_groups`` or ``forward_auth.rules``.
    ``created`` receives ``(id, display name)`` of each group this call
    created (not one a racing sign-in created first). ``known``: groups the
    user is in already; values naming one of them need no look-up (at most
    sign-ins, none do).
    """
    if not values:
        return []
    found: dict[str, str] = {}
    for value in values:
        for group in known:
            if group.named(value):
                found[value] = group.group_id
                break
    if len(found) == len(values):
        return list(dict.fromkeys(found[v] for v in values))
    keys = {v.lower() for v in values}
    rows = dbsession.execute(
        sa.select(Group.id, Group.external_id, Group.display_name_key).where(
            sa.or_(Group.external_id.in_(values), Group.display_name_key.in_(keys))
        )
    ).all()
    for row in rows:
        for value in values:
            if value == row.external_id or value.lower() == row.display_name_key:
                found.setdefault(value, row.id)
    missing = [v for v in values if v not in found]
    if missing:
        now = utcnow()
        # ON CONFLICT DO NOTHING: two first sign-ins racing to create the same
        # group both succeed, and the second reads the first one's row below.
        inserted = dbsession.execute(
            _insert(dbsession, Group)
            .values(
                [
                    {
                        "id": new_id(),
                        "display_name": v[:512],
                        "display_name_key": v.lower()[:512],
                        "external_id": v[:256],
                        "scim_data": {"displayName": v, "externalId": v},
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for v in missing
                ]
            )
            .on_conflict_do_nothing()
            .returning(Group.id, Group.display_name)
        ).all()
        if created is not None:
            order = {v[:512]: i for i, v in enumerate(missing)}
            created.extend(
                (row.id, row.display_name) for row in sorted(inserted, key=lambda r: order.get(r.display_name, 0))
            )
        for row in dbsession.execute(
            sa.select(Group.id, Group.display_name_key).where(Group.display_name_key.in_([v.lower() for v in missing]))
        ):
            for value in missing:
                if value.lower() == row.display_name_key:
                    found[value] = row.id
    return list(dict.fromkeys(found[v] for v in values if v in found))


def set_memberships(
    dbsession, user_id: str, group_ids: list[str], current: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """Make the user's memberships exactly ``group_ids``; the ids of the groups (joined, in the
    order given; left). ``current``: the ids of the groups the user is in, when already read."""
    if current is None:
        current = set(dbsession.scalars(sa.select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
    wanted = set(group_ids)
    gone, new = current - wanted, wanted - current
    if gone:
        dbsession.execute(
            sa.delete(GroupMember).where(GroupMember.user_id == user_id, GroupMember.group_id.in_(gone)),
            execution_options={"synchronize_session": False},
        )
    if new:
        now = utcnow()
        dbsession.execute(
            _insert(dbsession, GroupMember)
            .values([{"group_id": g, "user_id": user_id, "created_at": now} for g in sorted(new)])
            .on_conflict_do_nothing()
        )
    if gone or new:
        zope.sqlalchemy.mark_changed(dbsession)
    return [g for g in dict.fromkeys(group_ids) if g in new], sorted(gone)


@dataclass(frozen=True)
class ClaimSync:
    """What a sign-in's groups claim changed: the groups it created ``(id, display
    name)``, and the ids of the groups the user joined and left. True when the
    user's memberships changed."""

    created: tuple[tuple[str, str], ...] = ()
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


def claims_own_groups(settings, user: User) -> bool:
    """Whether the ``groups`` claim sets this user's memberships (see the module docstring)."""
    return not scim_enabled(settings) or user.provisioned_by == "saml"


def sync_groups_from_claims(request, user: User, identity, current: list[Membership]) -> ClaimSync:
    """For a user created at first sign-in, set their groups from the claim; what changed.

    ``current``: the groups the user is in (:func:`memberships`).
    """
    if not claims_own_groups(request.registry.gateway_settings, user):
        return ClaimSync()
    if not identity.groups and (identity.profile or {}).get("groups_link"):
        log.warning(OVERAGE_WARNING, user.user_name, request.correlation_id)
        return ClaimSync()
    created: list[tuple[str, str]] = []
    group_ids = groups_for_claim(request.dbsession, identity.groups, created=created, known=current)
    joined, left = set_memberships(request.dbsession, user.id, group_ids, {g.group_id for g in current})
    return ClaimSync(tuple(created), tuple(joined), tuple(left))


def announce_claim_groups(request, user: User, sync: ClaimSync) -> None:
    """Fire the group events of what a sign-in's claim changed: ``created``, then
    ``members_added`` / ``members_removed`` naming the user (actor
    ``user:<userName>``, source ``saml``), as a SCIM group write fires them."""
    if not (sync.created or sync):
        return
    hook = request.registry.pm.hook
    if not (hook.gateway_group_event.get_hookimpls() or hook.gateway_event_committed.get_hookimpls()):
        return  # nobody listens: no read of the groups' names
    names = dict(
        request.dbsession.execute(
            sa.select(Group.id, Group.display_name).where(Group.id.in_([*sync.joined, *sync.left]))
        ).all()
    )
    context = HookContext.of(request)

    def fire(type_: str, group_id: str, name: str | None, user_ids: tuple[str, ...] = ()) -> None:
        fire_group(
            context,
            GroupEvent(
                type=type_,
                group_id=group_id,
                display_name=name,
                actor=f"user:{user.user_name}",
                source="saml",
                correlation_id=request.correlation_id,
                user_ids=user_ids,
            ),
        )

    for group_id, name in sync.created:
        fire("created", group_id, name)
    for group_id in sync.joined:
        fire("members_added", group_id, names.get(group_id), (user.id,))
    for group_id in sync.left:
        fire("members_removed", group_id, names.get(group_id), (user.id,))


# ------------------------------------------------------------------ admins
#
# ``users.is_admin`` is the one flag the security policy reads. It is true for
# a member of a group in ``gateway.admin_groups``, a userName in
# ``gateway.admin_users``, or a user with ``admin_granted_by`` set (a grant
# from ``gateway CONFIG users grant-admin`` or the console). The grant is its
# own column, so the recomputations below (at every sign-in, after every
# write to an admin group) keep it instead of undoing it.


def _admin_match(settings):
    """SQL: the group is one of ``gateway.admin_groups`` (display name or external id)."""
    names = settings.gateway.admin_groups
    return sa.or_(Group.display_name_key.in_([n.lower() for n in names]), Group.external_id.in_(names))


def _in_admin_group(settings):
    """SQL (correlated on ``users``): the user is in an admin group."""
    return (
        sa.select(sa.literal(1))
        .select_from(GroupMember)
        .join(Group, Group.id == GroupMember.group_id)
        .where(GroupMember.user_id == User.id, _admin_match(settings))
        .exists()
    )


def _is_admin(settings):
    """SQL (on ``users``): what ``is_admin`` should be."""
    reasons = [User.admin_granted_by.is_not(None)]
    if settings.gateway.admin_users:
        reasons.append(User.user_name_key.in_([n.lower() for n in settings.gateway.admin_users]))
    if settings.gateway.admin_groups:
        reasons.append(_in_admin_group(settings))
    return sa.or_(*reasons)


def _names_admin_group(settings, display_name: str | None, external_id: str | None) -> bool:
    """Python's side of :func:`_admin_match`: a display name in any case, or an external id."""
    names = settings.gateway.admin_groups
    return (display_name or "").lower() in {n.lower() for n in names} or external_id in names


def _listed_admin(settings, user: User) -> bool:
    """Whether ``gateway.admin_users`` names the user."""
    return user.user_name_key in {n.lower() for n in settings.gateway.admin_users}


def is_admin_group(settings, data: dict | None) -> bool:
    """Whether a group resource (SCIM ``displayName``/``externalId``) is an admin group."""
    if not data:
        return False
    return _names_admin_group(settings, str(data.get("displayName") or ""), data.get("externalId"))


def admin_reasons(dbsession, settings, user: User) -> list[str]:
    """Why ``user`` is an admin, in words (empty when they are not): for the console and the CLI."""
    reasons = []
    if settings.gateway.admin_groups:
        groups = dbsession.scalars(
            sa.select(Group.display_name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.user_id == user.id, _admin_match(settings))
            .order_by(Group.display_name_key)
        ).all()
        reasons += [f'member of the admin group "{name}"' for name in groups]
    if _listed_admin(settings, user):
        reasons.append("listed in gateway.admin_users")
    if user.admin_granted_by:
        reasons.append(f"granted by {user.admin_granted_by}")
    return reasons


def refresh_admin_flag(dbsession, settings, user: User) -> bool:
    """Set ``user.is_admin`` from groups, ``gateway.admin_users`` and the grant; True if it changed."""
    dbsession.flush()
    admin = bool(dbsession.scalar(sa.select(_is_admin(settings)).where(User.id == user.id)))
    if bool(user.is_admin) != admin:
        user.is_admin = admin
        return True
    return False


def refresh_admin(request, user: User, current: list[Membership] | None = None) -> bool:
    """At a sign-in: :func:`refresh_admin_flag` in the request's session.

    ``current``: the groups the user is in, when the sign-in read them and
    changed none; the flag is then decided from them without a query, by the
    same rule as :func:`_is_admin`.
    """
    settings = request.registry.gateway_settings
    if current is None:
        return refresh_admin_flag(request.dbsession, settings, user)
    admin = (
        user.admin_granted_by is not None
        or _listed_admin(settings, user)
        or any(_names_admin_group(settings, g.display_name_key, g.external_id) for g in current)
    )
    if bool(user.is_admin) != admin:
        user.is_admin = admin
        return True
    return False


def refresh_admins_after_group_write(request, group_id: str, old_data: dict | None, new_data: dict | None) -> int:
    """After a SCIM group create, replace, patch or delete: fix ``is_admin`` of those it touches.

    Costs nothing unless the group is (or was) an admin group: then one
    UPDATE recomputes the flag for its members and for the current admins.
    ``old_data``/``new_data`` are the group's SCIM data before and after
    (None for a create / delete). Returns the number of users updated.
    """
    settings = request.registry.gateway_settings
    if not settings.gateway.admin_groups:
        return 0
    if not (is_admin_group(settings, old_data) or is_admin_group(settings, new_data)):
        return 0
    return recompute_admins(request.dbsession, settings, group_id)


def recompute_admins(dbsession, settings, group_id: str | None = None) -> int:
    """UPDATE ``is_admin`` where it is wrong: members of ``group_id`` and current admins
    (every user when ``group_id`` is None)."""
    should = _is_admin(settings)
    stmt = sa.update(User).values(is_admin=should).where(User.is_admin != should)
    if group_id is not None:
        stmt = stmt.where(
            sa.or_(
                User.is_admin.is_(True),
                User.id.in_(sa.select(GroupMember.user_id).where(GroupMember.group_id == group_id)),
            )
        )
    result = dbsession.execute(stmt, execution_options={"synchronize_session": False})
    zope.sqlalchemy.mark_changed(dbsession)
    return result.rowcount or 0
