"""Seat limit (entry point ``seat_limit``): no new users beyond ``seat_limit.max_users`` active ones.

An example policy plugin. It wraps the provisioning decision rather than
answering it: whatever the other policies decide stands, except that a
``create`` (a first sign-in in ``first_login`` mode, or a SCIM POST) or a
reactivation (over SCIM, or by an admin in the console or the CLI:
``user["active"]`` False, the change makes them active) is
turned into a refusal once the active users reach the limit; Entra's
reactivation then fails with the message, nothing changed, and succeeds at a
later cycle once a seat is free. Existing users keep signing in, and
deactivating someone frees a seat.

The count runs in the request's own transaction. Two creates racing for the
last seat may both pass; a limit that must hold under races belongs in the
database, not in a policy hook.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway import hookimpl
from gateway.db.models import User
from gateway.interfaces import Decision, PluginSetting
from gateway.settings import integer

KEY = "seat_limit.max_users"


def message(limit: int) -> str:
    return (
        f"This application has no free seat: it is limited to {limit} active users."
        " Ask your administrator to free a seat or raise the limit."
    )


@hookimpl
def gateway_plugin_settings():
    return [PluginSetting(KEY, integer(1, 10_000_000, "users"), help="the most active users there may be")]


@hookimpl
def gateway_pyramid_configure(config):
    config.registry.seat_limit_max_users = config.registry.plugin_settings[KEY]


@hookimpl(wrapper=True)
def gateway_provisioning_decide(context, identity, user, source):
    decision = yield
    if decision is None or decision.action == "deny":
        return decision
    # Over SCIM, or by an admin in the console or the CLI (source "admin", "cli").
    reactivation = source != "saml" and user is not None and not user.get("active", True)
    if decision.action != "create" and not reactivation:
        return decision
    limit = context.registry.seat_limit_max_users
    active = context.dbsession.scalar(sa.select(sa.func.count()).select_from(User).where(User.active.is_(True)))
    if active >= limit:
        return Decision.deny(message(limit))
    return decision
