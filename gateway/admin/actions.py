"""What an admin can change, from the console or the CLI: one function per action.

Each action writes in the caller's transaction, records one audit row
(actor ``admin:<userName>`` from the console, ``cli`` from the command line)
and, where it changes a user, fires ``gateway_user_event`` with the same
actor, so webhooks and audit sinks see console changes like any other. The
``audit`` plugin does not record these events a second time (their source is
``admin`` or ``cli``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import audit
from ..db.models import SsoSession, User, utcnow
from ..events import fire_user
from ..interfaces import HookContext, UserEvent
from ..provisioning.groups import admin_reasons, refresh_admin_flag
from ..sessions import end_session_by_hash, end_sessions_for_user

#: The sentence shown instead of "Deactivate" for a user that SCIM provisioned.
SCIM_IS_SOURCE = (
    "This user was provisioned by Microsoft Entra ID over SCIM: Entra is the source of truth."
    " Block sign-in or remove the user's assignment to the application in Entra, and the next"
    " provisioning cycle deactivates them here."
)


class ActionRefused(Exception):
    """The action does not apply (the message says why, for the page or the terminal)."""


@dataclass(frozen=True)
class Actor:
    """Who acts, and where the action is written."""

    dbsession: Any
    registry: Any
    name: str
    source: str
    correlation_id: str | None = None
    request: Any = None  # None from the CLI

    @classmethod
    def from_request(cls, request) -> Actor:
        return cls(
            request.dbsession,
            request.registry,
            f"admin:{request.identity.user_name}",
            "admin",
            request.correlation_id,
            request,
        )

    @property
    def settings(self):
        return self.registry.gateway_settings


def record(actor: Actor, action: str, target_type: str, target_id=None, target_name=None, **details) -> None:
    """The audit row of one admin action (``action`` like ``admin.session.end``)."""
    audit.record(
        actor.dbsession,
        actor=actor.name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_name=target_name,
        source=actor.source,
        correlation_id=actor.correlation_id,
        details={k: v for k, v in details.items() if v is not None},
    )


def user_event(actor: Actor, type_: str, user: User, changed: tuple[str, ...] = (), reason: str = "") -> None:
    fire_user(
        HookContext(actor.registry, actor.dbsession, actor.request),
        UserEvent(
            type=type_,
            user_id=user.id,
            user_name=user.user_name,
            actor=actor.name,
            source=actor.source,
            correlation_id=actor.correlation_id,
            changed=changed,
            reason=reason,
        ),
    )


# ------------------------------------------------------------------ sessions


def end_session(actor: Actor, id_hash: str) -> SsoSession:
    """End one live session: its browser is signed out at its next request, on every instance."""
    row = actor.dbsession.get(SsoSession, id_hash)
    if row is None or row.ended_at is not None:
        raise ActionRefused("That session has already ended.")
    end_session_by_hash(actor.dbsession, id_hash)
    user = row.user
    record(actor, "admin.session.end", "user", user.id, user.user_name, session=id_hash[:12])
    user_event(actor, "signed_out", user, reason="session ended by an administrator")
    return row


def sign_out_everywhere(actor: Actor, user: User) -> int:
    """End every session of ``user``; returns how many were live."""
    ended = end_sessions_for_user(actor.dbsession, user.id)
    record(actor, "admin.user.sign_out_everywhere", "user", user.id, user.user_name, sessions=ended)
    if ended:
        user_event(actor, "signed_out", user, reason="signed out everywhere by an administrator")
    return ended


# ------------------------------------------------------------------ activation


def _first_login_only(user: User) -> None:
    if user.provisioned_by != "saml":
        raise ActionRefused(SCIM_IS_SOURCE)


def deactivate(actor: Actor, user: User) -> int:
    """Deactivate a user created by first sign-in, and end their sessions (returns how many)."""
    _first_login_only(user)
    if actor.name == f"admin:{user.user_name}":
        raise ActionRefused("You cannot deactivate yourself: you would lose the console with nobody to reactivate you.")
    if not user.active:
        raise ActionRefused(f"{user.user_name} is already inactive.")
    _set_active(actor, user, False)
    ended = end_sessions_for_user(actor.dbsession, user.id)
    actor.dbsession.flush()
    record(actor, "admin.user.deactivate", "user", user.id, user.user_name, sessions=ended)
    user_event(actor, "deactivated", user, changed=("active",))
    return ended


def reactivate(actor: Actor, user: User) -> None:
    """Make a user created by first sign-in active again, if the provisioning policy agrees.

    The policy is asked as for a SCIM reactivation (``source`` ``admin`` or
    ``cli``): a seat limit, say, holds whoever reactivates.
    """
    _first_login_only(user)
    if user.active:
        raise ActionRefused(f"{user.user_name} is already active.")
    _ask_policy(actor, user)
    _set_active(actor, user, True)
    actor.dbsession.flush()
    record(actor, "admin.user.reactivate", "user", user.id, user.user_name)
    user_event(actor, "reactivated", user, changed=("active",))


def _ask_policy(actor: Actor, user: User) -> None:
    from ..interfaces import HookContext
    from ..provisioning.signin import user_as_dict
    from ..scim.service import identity_from

    stored = user_as_dict(user, actor.dbsession)
    identity = identity_from({**(user.scim_data or {}), "userName": user.user_name, "active": True})
    decision = actor.registry.pm.hook.gateway_provisioning_decide(
        context=HookContext(actor.registry, actor.dbsession, actor.request),
        identity=identity,
        user=stored,
        source=actor.source,
    )
    if decision is not None and decision.action == "deny":
        raise ActionRefused(f"{user.user_name} stays inactive: {decision.reason}")


def _set_active(actor: Actor, user: User, active: bool) -> None:
    # The SCIM resource says the same, so a SCIM read agrees with the page:
    # the core's copy here, and a backend's that keeps its own (gateway.scim.directory).
    if actor.request is not None:
        from ..scim.directory import set_active_in_backend

        set_active_in_backend(actor.request, user.id, active)
    user.active = active
    user.scim_data = {**(user.scim_data or {}), "active": active}
    user.version = (user.version or 1) + 1
    user.updated_at = utcnow()


# ------------------------------------------------------------------ admins


def grant_admin(actor: Actor, user: User) -> bool:
    """Make ``user`` an admin whatever their groups (kept through group syncs); True if they were not."""
    if user.admin_granted_by is not None:
        raise ActionRefused(f"{user.user_name} was already granted admin ({user.admin_granted_by}).")
    user.admin_granted_by = actor.name[:256]
    changed = refresh_admin_flag(actor.dbsession, actor.settings, user)
    actor.dbsession.flush()
    record(actor, "admin.user.grant_admin", "user", user.id, user.user_name)
    if changed:
        user_event(actor, "updated", user, changed=("is_admin",))
    return changed


def revoke_admin(actor: Actor, user: User) -> list[str]:
    """Take back a grant; returns why the user is still an admin (groups, gateway.admin_users), if anything."""
    if user.admin_granted_by is None:
        still = admin_reasons(actor.dbsession, actor.settings, user)
        raise ActionRefused(
            f"{user.user_name} has no admin grant to revoke"
            + (f"; they are an admin as {' and '.join(still)}." if still else ".")
        )
    user.admin_granted_by = None
    changed = refresh_admin_flag(actor.dbsession, actor.settings, user)
    actor.dbsession.flush()
    record(actor, "admin.user.revoke_admin", "user", user.id, user.user_name)
    if changed:
        user_event(actor, "updated", user, changed=("is_admin",))
    return admin_reasons(actor.dbsession, actor.settings, user)


def find_user(dbsession, user_name: str) -> User:
    user = dbsession.scalars(sa.select(User).where(User.user_name_key == user_name.lower())).first()
    if user is None:
        raise ActionRefused(f'no user with userName "{user_name}"')
    return user


# ------------------------------------------------------------------ SCIM tokens


def create_token(actor: Actor, name: str) -> str:
    """A new SCIM token named ``name``; returns the secret, shown this once."""
    from ..scim import tokens

    try:
        secret = tokens.create_token(actor.dbsession, name)
    except tokens.TokenError as exc:
        raise ActionRefused(str(exc)) from None
    record(actor, "scim.token.create", "token", target_name=name)
    return secret


def revoke_token(actor: Actor, name: str) -> None:
    """Refuse the token from the next request on, on every instance."""
    from ..scim import tokens

    try:
        row = tokens.revoke_token(actor.dbsession, name)
    except tokens.TokenError as exc:
        raise ActionRefused(str(exc)) from None
    record(actor, "scim.token.revoke", "token", target_id=str(row.id), target_name=name)
