"""Allowed groups (entry point ``allowed_groups``): only members of these groups may sign in.

An example policy plugin. ``allowed_groups.groups`` lists group display
names or external ids (Entra object ids), quoted when a name has spaces. A
SAML sign-in is allowed when the person is in one of them, by the ``groups``
claim of this sign-in or by the memberships stored for them (SCIM groups);
otherwise it is refused with a message. SCIM creates are left alone (None):
a user has no groups before Entra adds them, and Entra's own scoping
("Sync only assigned users and groups") is the SCIM-side filter.

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


@hookimpl
def gateway_provisioning_decide(context, identity, user, source):
    if source != "saml":
        return None
    allowed = context.registry.allowed_groups
    theirs = {g.lower() for g in identity.groups} | {g.lower() for g in (user or {}).get("groups", ())}
    return None if theirs & allowed else Decision.deny(DENIED)
