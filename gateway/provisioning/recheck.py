"""Asking the provisioning policy again when SCIM changes what it decides on.

A sign-in and a SCIM create ask the policy as a matter of course. A person
already in the directory changes too: Entra PATCHes their email, reactivates
them, adds them to a group or takes them out of one. The SCIM service asks
the policy again about an active person (``source == "scim"``) when a write
changes an attribute of the :class:`~gateway.interfaces.Identity` the policy
receives, reactivates them, or changes their memberships. Whatever the
case, ``user`` is the stored user before the change and ``identity`` the
person after it, so a policy can tell what changed.

What a refusal does (docs/plugins.md, "When it is asked, and what a refusal
does"): a reactivation is an admission, like a create, so it is refused and
nothing is written; any other write is stored, for the directory mirrors
Entra, and the person loses their sessions (a sign-in asks the policy again,
so they stay out until it allows them).

Nothing here runs unless a plugin besides the shipped default implements
``gateway_provisioning_decide``: the default allows every SCIM write about a
known user, so Entra's syncs pay nothing for the question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from ..db.models import Group, GroupMember, User
from ..interfaces import Decision, HookContext, Identity
from .signin import user_as_dict

#: The plugin name the shipped default policy is registered under (gateway/plugins.py).
SHIPPED_POLICY = "gateway.provisioning.policy"
#: The detail of a refusal whose policy gave no reason.
REFUSED = "provisioning refused by policy"

_COLUMNS = (
    User.id,
    User.user_name,
    User.external_id,
    User.idp_subject,
    User.active,
    User.email,
    User.display_name,
    User.given_name,
    User.family_name,
    User.title,
    User.department,
    User.provisioned_by,
)
_CHUNK = 500  # ids per IN (...): far below SQLite's and PostgreSQL's parameter limits


def asks_again(registry) -> bool:
    """Whether a plugin besides the shipped default answers ``gateway_provisioning_decide``."""
    impls = registry.pm.hook.gateway_provisioning_decide.get_hookimpls()
    return any(impl.plugin_name != SHIPPED_POLICY for impl in impls)


def refusal(context: HookContext, identity: Identity, user: dict | None) -> str | None:
    """The policy's reason for refusing this SCIM change, or None when it does not refuse."""
    decision: Decision | None = context.registry.pm.hook.gateway_provisioning_decide(
        context=context, identity=identity, user=user, source="scim"
    )
    if decision is not None and decision.action == "deny":
        return decision.reason or REFUSED
    return None


def stored_users(dbsession, user_ids: Iterable[str]) -> dict[str, dict]:
    """The users as the policy receives them (with ``groups``), by id; two reads per 500 users.

    Columns only, never ORM objects: a SCIM backend writes these rows with
    statements, and an object loaded here would hold stale values later.
    """
    ids = list(dict.fromkeys(user_ids))
    users: dict[str, dict] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for row in dbsession.execute(sa.select(*_COLUMNS).where(User.id.in_(chunk))):
            users[row.id] = {**user_as_dict(row), "groups": set()}
        rows = dbsession.execute(
            sa.select(GroupMember.user_id, Group.display_name, Group.external_id)
            .join(Group, Group.id == GroupMember.group_id)
            .where(GroupMember.user_id.in_(chunk))
        )
        for user_id, *names in rows:
            if user_id in users:
                users[user_id]["groups"].update(n for n in names if n)
    for user in users.values():
        user["groups"] = sorted(user["groups"])
    return {user_id: users[user_id] for user_id in ids if user_id in users}


def stored_identity(user: dict, groups: Iterable[str]) -> Identity:
    """The person as the directory describes them (the fields of a SCIM create's identity)."""
    return Identity(
        subject=None,
        user_name=user["userName"],
        email=user["email"],
        profile={
            "email": user["email"],
            "given_name": user["givenName"],
            "family_name": user["familyName"],
            "display_name": user["displayName"],
            "title": user["title"],
            "department": user["department"],
        },
        groups=tuple(sorted(groups)),
    )


def write_refusal(
    context: HookContext, user_id: str, old_data: dict, new_data: dict, identity_of: Callable[[dict], Identity]
) -> str | None:
    """Before a SCIM PUT or PATCH of a user: the policy's refusal, or None.

    Asked only when the user is active after the write and the write
    reactivates them or changes their identity (``identity_of`` builds it
    from SCIM data, as a create does). The identity carries the user's
    stored groups, which a user write does not change.
    """
    if new_data.get("active", True) is False or not asks_again(context.registry):
        return None
    after = identity_of(new_data)
    if old_data.get("active", True) is not False and identity_of(old_data) == after:
        return None
    user = stored_users(context.dbsession, [user_id]).get(user_id)
    if user is None:
        return None
    return refusal(context, dataclasses.replace(after, groups=tuple(user["groups"])), user)


@dataclasses.dataclass(frozen=True)
class MembershipChange:
    """One group's change, for :func:`membership_refusals`.

    ``names_before``/``names_after``: the group's display name and external
    id before and after (empty for a create / a delete); ``joined`` and
    ``left``: the users added and removed; ``members``: reads the group's
    members now, called only when its names changed (then every member is
    asked).
    """

    names_before: frozenset[str]
    names_after: frozenset[str]
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    members: Callable[[], Iterable[str]] | None = None


def group_names(data: dict | None) -> frozenset[str]:
    """A group's names as a user's ``groups`` lists them: display name and external id."""
    if not data:
        return frozenset()
    return frozenset(v for v in (data.get("displayName"), data.get("externalId")) if isinstance(v, str) and v)


def membership_refusals(context: HookContext, change: MembershipChange) -> list[tuple[str, str, str]]:
    """After a SCIM group write: ``(user id, userName, reason)`` of each active user it
    concerns whom the policy now refuses.

    Each is asked with ``user`` as before the change (its ``groups`` as they
    were) and ``identity`` as after it (its ``groups`` as they are now).
    """
    if not asks_again(context.registry):
        return []
    ids = [*change.joined, *change.left]
    if change.names_before != change.names_after and change.members is not None:
        ids += change.members()
    if not ids:
        return []
    joined, left = set(change.joined), set(change.left)
    refused = []
    for user_id, user in stored_users(context.dbsession, ids).items():
        if not user["active"]:
            continue  # no session to end; a reactivation asks again
        now = set(user["groups"])
        member_now, member_before = user_id not in left, user_id not in joined
        before = (now - (change.names_after if member_now else set())) | (
            change.names_before if member_before else set()
        )
        reason = refusal(context, stored_identity(user, now), {**user, "groups": sorted(before)})
        if reason is not None:
            refused.append((user_id, user["userName"], reason))
    return refused
