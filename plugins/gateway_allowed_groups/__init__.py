"""Allowed groups (entry point ``allowed_groups``): only members of these groups may sign in.

An example policy plugin. ``allowed_groups.groups`` lists group display
names or external ids (Entra object ids), quoted when a name has spaces. A
SAML sign-in is allowed when the person is in one of them, by the ``groups``
claim of this sign-in or by the memberships stored for them (SCIM groups);
otherwise it is refused with a message.

Over SCIM it judges only a change that takes someone out of every allowed
group (their stored groups before it, ``user["groups"]``, had one; after
it, ``identity.groups``, none): a member removed, a group deleted or
renamed. The person keeps their account, as Entra says, but loses their
sessions, and their sign-ins are refused until they are in an allowed group
again. SCIM creates and reactivations are left alone (None): a user has no
groups before Entra adds them, and Entra's own scoping ("Sync only assigned
users and groups") is the SCIM-side filter. A person allowed by the claim
alone (a tenant that provisions users but not groups) is never refused over
SCIM.

Names are compared case-insensitively, ids exactly as Entra sends them.
When Entra's group overage replaces the groups claim, only stored
memberships count.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import Decision, PluginSetting
from gateway.settings import parse_names

KEY = "allowed_groups.groups"
DENIED = "You are not in a group that may use this application. Ask your administrator to add you to one."


def parse_groups(raw: str) -> frozenset[str]:
    groups = parse_names(raw)
    if not groups:
        raise ValueError("expected group names or object ids")
    return frozenset(g.lower() for g in groups)


@hookimpl
def gateway_plugin_settings():
    return [PluginSetting(KEY, parse_groups, help="group display names or object ids whose members may sign in")]


@hookimpl
def gateway_pyramid_configure(config):
    config.registry.allowed_groups = config.registry.plugin_settings[KEY]


def _allowed(allowed: frozenset[str], groups) -> bool:
    return any(g.lower() in allowed for g in groups)


@hookimpl
def gateway_provisioning_decide(context, identity, user, source):
    allowed = context.registry.allowed_groups
    if source != "saml":  # SCIM, or an admin's reactivation in the console or the CLI
        if user is None or not user.get("active", True):
            return None  # a create or a reactivation
        left = _allowed(allowed, user.get("groups", ())) and not _allowed(allowed, identity.groups)
        return Decision.deny(DENIED) if left else None
    if _allowed(allowed, identity.groups) or _allowed(allowed, (user or {}).get("groups", ())):
        return None
    return Decision.deny(DENIED)
