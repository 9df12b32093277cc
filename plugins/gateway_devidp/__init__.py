"""Development IdP: an Entra look-alike inside the gateway, for development.ini only.

``gateway.plugins = entra devidp`` with ``saml.idp_profile = devidp`` gives a
working sign-in without a tenant: ``/devidp/saml2`` plays Entra's login URL,
shows a page to pick or type a test user, and posts back a response shaped
like Entra's (same claim URIs, object ids, group object ids, issuer
``https://sts.windows.net/<tenant>/``, assertion-only RSA-SHA256 signature).
Its key and certificate are made at first start next to the SQLite database
(or under ``./var``). It refuses to start unless ``gateway.base_url`` is
http(s)://localhost or 127.0.0.1, says so loudly in the log, and answers only
clients on this machine (``views.loopback_only``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from gateway import ConfigError, hookimpl
from gateway.interfaces import IdpProfile

log = logging.getLogger("gateway.devidp")

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _metadata(registry) -> str:
    return registry.devidp.metadata()


@hookimpl
def gateway_idp_profiles():
    from gateway_entra import CLAIM_MAP, GROUPS_OVERAGE_CLAIM, OBJECT_ID_CLAIM

    return [
        IdpProfile(
            name="devidp",
            label="the development IdP",
            claim_map=CLAIM_MAP,
            subject_claim=OBJECT_ID_CLAIM,
            default_metadata=_metadata,
            groups_overage_claim=GROUPS_OVERAGE_CLAIM,
        )
    ]


@hookimpl
def gateway_pyramid_configure(config):
    settings = config.registry.gateway_settings
    host = urlsplit(settings.gateway.base_url).hostname
    if host not in LOOPBACK:
        raise ConfigError(
            f"gateway.plugins: the development IdP (devidp) signs anyone in; it runs only with a"
            f' localhost or 127.0.0.1 gateway.base_url, got "{settings.gateway.base_url}"'
        )
    from .idp import DevIdp, key_folder

    config.registry.devidp = DevIdp(settings.gateway.base_url, key_folder(settings.database_url))
    log.warning(
        "\n%s\n!! DEVELOPMENT IdP ENABLED (devidp): anybody can sign in as anybody.\n"
        "!! Never enable it outside development.\n%s",
        "!" * 72,
        "!" * 72,
    )
    # Its pages extend the gateway's layout: templates/devidp/*.html.
    config.add_jinja2_search_path("gateway_devidp:templates", name=".html")
    config.add_route("devidp.sso", "/devidp/saml2")
    config.add_route("devidp.signin", "/devidp/signin")
    config.scan("gateway_devidp.views")
