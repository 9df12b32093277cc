"""Identity gateway: SAML sign-in, SCIM provisioning and forward-auth for Entra ID.

``main`` is the Pyramid app factory (``use = egg:entra-identity-gateway``). It
reads as a table of contents: each ``config.include`` adds one concern.
"""

from __future__ import annotations

import pluggy

from .errors import ConfigError

#: Marker for plugin hook implementations: ``from gateway import hookimpl``.
hookimpl = pluggy.HookimplMarker("gateway")

__all__ = ["ConfigError", "hookimpl", "main", "paste_app"]


def paste_app(global_config, **settings):
    """The app factory pserve loads (``use = egg:entra-identity-gateway``): :func:`main`,
    with a bad setting stopping the process with its one line and status 1, not a traceback."""
    try:
        return main(global_config, **settings)
    except ConfigError as exc:
        # SystemExit with a message: the interpreter prints it to stderr and exits with 1.
        raise SystemExit(str(exc)) from exc


def main(global_config, **settings):
    """Build the WSGI app; a bad setting raises ConfigError naming the key."""
    from pyramid.config import Configurator

    from .settings import expand_environment, parse_settings

    settings = expand_environment(settings)
    gateway_settings = parse_settings(settings)
    with Configurator(settings=settings) as config:
        config.registry.gateway_settings = gateway_settings

        # Plugins first: everything below may ask them for registrations.
        config.include(".plugins")
        # Request-scoped SQLAlchemy session under pyramid_tm, with retries.
        config.include(".db")
        # The request class: correlation ids and the per-request helpers (gateway/request.py).
        config.include(".web")
        # HTML pages: Jinja2 templates on one layout, /static, security headers.
        config.include(".templating")
        # Server-side browser sessions: request.identity for every view.
        config.include(".sessions")
        # GET /auth for reverse proxies: identity headers, group rules. Its
        # route comes first because routes match in order and it is the hot path.
        config.include(".forward_auth")
        # Liveness and readiness probes for load balancers and orchestrators.
        config.include(".health")
        # GET /metrics for Prometheus: counters added up over the worker processes.
        config.include(".metrics")
        # Provisioning: the attribute transforms attributes.transforms names.
        config.include(".provisioning")
        # SCIM 2.0 for Entra provisioning, on the storage backend scim.storage names.
        config.include(".scim")
        # SAML sign-in with the IdP profile's metadata, logout, /whoami, home page.
        config.include(".saml")
        # The admin console under /admin, for the admins (gateway.admin_groups, gateway.admin_users).
        config.include(".admin")
        # What the console shows about sign-ins and provisioning: traces, the SCIM log, test sign-ins.
        config.include(".admin.signins")

        # The one bridge to Pyramid for plugins: their routes and views.
        config.registry.pm.hook.gateway_pyramid_configure(config=config)
    # Allowed forward-auth checks of cached identities are answered before Pyramid.
    # One line per request (logging.access), around all of it: fast-path answers are logged too.
    from .accesslog import access_log
    from .forward_auth import fast_path

    # Unreadable requests (400) and an unreachable database (503), answered for every route.
    from .guard import Guard

    return access_log(fast_path(Guard(config.make_wsgi_app(), config.registry), config.registry), config.registry)
