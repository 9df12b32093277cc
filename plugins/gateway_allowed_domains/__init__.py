"""Allowed email domains (entry point ``allowed_domains``): only people at these domains.

An example policy plugin: a SAML sign-in or SCIM create whose email (or,
without one, a userName that looks like one) is not at a domain of
``allowed_domains.domains`` is refused with a message naming the domains.
Subdomains are not included: list each one. Everyone else is left to the
next policy (None), so the provisioning mode still applies.

The core asks it again when SCIM reactivates someone or changes an active
person's identity (userName, emails, names, title, department): a
reactivation at another domain is refused like a create, and an active user
whose address is now at another domain is stored as Entra says but loses
their sessions and cannot sign in.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import Decision, PluginSetting

KEY = "allowed_domains.domains"


def parse_domains(raw: str) -> frozenset[str]:
    domains = frozenset(d.lower().lstrip("@") for d in raw.replace(",", " ").split())
    for domain in domains:
        if "." not in domain or "@" in domain or "/" in domain:
            raise ValueError("expected email domains such as example.com")
    return domains


@hookimpl
def gateway_plugin_settings():
    return [PluginSetting(KEY, parse_domains, help="the email domains whose people may sign in or be created")]


@hookimpl
def gateway_pyramid_configure(config):
    config.registry.allowed_domains = config.registry.plugin_settings[KEY]


def _address(identity, user) -> str | None:
    for value in (identity.email, (user or {}).get("email"), identity.user_name):
        if isinstance(value, str) and "@" in value:
            return value
    return None


@hookimpl
def gateway_provisioning_decide(context, identity, user, source):
    domains = context.registry.allowed_domains
    address = _address(identity, user)
    if address is not None and address.rsplit("@", 1)[1].lower() in domains:
        return None
    listed = ", ".join(sorted(domains))
    return Decision.deny(f"Only people with an email address at {listed} may use this application.")
