"""SCIM 2.0 server for Entra's provisioning service, under ``/scim/v2``.

The storage backend is the one registered under ``scim.storage`` by an
enabled plugin (``gateway_scim_storage_backends``); the shipped ``sqlstore``
is the default. When no enabled plugin registers any backend, SCIM stays off
(its paths answer 404 and ``gateway CONFIG check`` warns): a gateway used only
for SAML sign-in needs no SCIM storage. Naming a backend nobody registers, or
a default that is missing while other backends are registered, stops
start-up. What the backend owns and what the core keeps in its own tables:
:mod:`gateway.scim.storage`.
"""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..plugins import collect

log = logging.getLogger(__name__)

SCIM_OFF = "SCIM is off: no enabled plugin registers a SCIM storage backend (add sqlstore to gateway.plugins)"


def token_warnings(request) -> list[str]:
    """Entra cannot provision before it has a token to present."""
    import sqlalchemy as sa

    from ..db.models import ScimToken

    with request.registry.db_engine.connect() as connection:
        live = connection.scalar(sa.select(sa.func.count()).where(ScimToken.revoked_at.is_(None)))
    if live:
        return []
    return [
        "no SCIM token: Entra cannot provision users yet; run `gateway CONFIG token create entra`"
        " and paste the token into Entra's provisioning Secret Token"
    ]


def includeme(config):
    from .directory import directory_storage
    from .provlog import ProvisioningLog
    from .schemas import resource_types
    from .tokens import TokenVerifier

    registry = config.registry
    settings = registry.gateway_settings
    backends = collect(registry.pm.hook.gateway_scim_storage_backends(), "SCIM storage backend")
    name = settings.scim.storage
    if name not in backends:
        if backends or "scim.storage" in config.get_settings():
            known = ", ".join(sorted(backends)) or "none"
            raise ConfigError(
                f'scim.storage: no enabled plugin registers the SCIM storage backend "{name}"'
                f" (registered: {known}); enable the plugin that provides it in gateway.plugins"
            )
        log.warning(SCIM_OFF)
        registry.warning_checks["scim"] = lambda request: [SCIM_OFF]
        return

    # A backend that keeps its data outside the core's tables is wrapped so
    # that each write is mirrored into them (gateway.scim.directory).
    registry.scim_storage = directory_storage(backends[name].factory(registry))
    registry.scim_tokens = TokenVerifier(registry)
    # One row per SCIM request for /admin/provisioning, written by a thread.
    registry.provisioning_log = ProvisioningLog(registry)
    if "scim" in settings.provisioning.mode:
        registry.warning_checks["scim"] = token_warnings
    registry.scim_resource_types = resource_types(settings.scim.custom_schemas)

    # Errors first: every failure under /scim/ becomes RFC 7644 error JSON.
    config.include(".errors")
    # Lower-case /users and /groups too: Omni's docs and some tenants use them.
    resource = "{resource:Users|users|Groups|groups}"
    config.add_route("scim.search", "/scim/v2/.search")
    config.add_route("scim.collection", f"/scim/v2/{resource}")
    # Before scim.resource, which would take ".search" for an id.
    config.add_route("scim.collection_search", f"/scim/v2/{resource}/.search")
    config.add_route("scim.resource", f"/scim/v2/{resource}/{{id}}")
    config.add_route("scim.me", "/scim/v2/Me*rest")
    config.add_route("scim.discovery", "/scim/v2/{what:ServiceProviderConfig|ResourceTypes|Schemas}*item")
    config.scan(".views")
