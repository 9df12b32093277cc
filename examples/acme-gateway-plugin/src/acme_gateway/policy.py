"""Contractors sign in only as members of an approved group.

A contractor is a person whose email is at one of ``acme.contractor_domains``.
Their sign-in is allowed when they are in a group of ``acme.approved_groups``,
by this sign-in's groups claim or by the memberships Entra provisioned (the
``groups`` of the stored user); otherwise it is refused with a reason the
person sees. Everybody else is left to the next policy (``None``), and so is
SCIM: Entra creates a user before it adds them to groups, so a group rule
would refuse every contractor's provisioning.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import Decision

from .settings import APPROVED_GROUPS, CONTRACTOR_DOMAINS

DENIED = (
    "Contractors may use this application only as members of an approved group."
    " Ask your Acme sponsor to add you to one."
)


@hookimpl
def gateway_provisioning_decide(context, identity, user, source):
    if source != "saml":
        return None
    settings = context.registry.plugin_settings
    email = identity.email or (user or {}).get("email") or ""
    if email.rpartition("@")[2].lower() not in settings[CONTRACTOR_DOMAINS]:
        return None
    groups = {g.lower() for g in identity.groups} | {g.lower() for g in (user or {}).get("groups", ())}
    return None if groups & settings[APPROVED_GROUPS] else Decision.deny(DENIED)
