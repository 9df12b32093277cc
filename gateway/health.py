"""Liveness (``/healthz``) and readiness (``/readyz``) probes.

Liveness says the process answers. Readiness says it can serve sign-ins and
SCIM: the database answers and its schema is at the migration head. Other
parts (the SAML SP) add their own readiness checks to
``registry.readiness_checks``: callables that take the request and return
``None`` when ready or a short reason when not.

``/readyz`` is public (load balancers probe it unauthenticated), so it says
only ready or not; the reasons (which name the metadata source, the
database error) go to the log when they change, and ``gateway CONFIG
check`` prints them.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from pyramid.view import view_config

from .db import migrate

log = logging.getLogger(__name__)


def check_database(request) -> str | None:
    try:
        with request.registry.db_engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return f"database unreachable: {exc.__class__.__name__}"
    current = migrate.current_revision(request.registry.db_engine)
    if current != request.registry.migration_head:
        return f"database schema at {current or 'nothing'}, expected {request.registry.migration_head}; run 'gateway CONFIG migrate'"
    return None


@view_config(route_name="health.live", renderer="json", request_method="GET")
def healthz(request):
    return {"status": "ok"}


@view_config(route_name="health.ready", renderer="json", request_method="GET")
def readyz(request):
    problems = {}
    for name, check in request.registry.readiness_checks.items():
        reason = check(request)
        if reason:
            problems[name] = reason
    if problems != getattr(request.registry, "readiness_problems", {}):
        request.registry.readiness_problems = problems
        if problems:
            log.warning("not ready: %s", "; ".join(f"{name}: {reason}" for name, reason in problems.items()))
        else:
            log.info("ready")
    if problems:
        request.response.status_int = 503
        return {"status": "unavailable"}
    return {"status": "ok"}


def deployment_warnings(request) -> list[str]:
    """What a deployer still has to fix before people rely on this gateway (``gateway CONFIG check``)."""
    settings = request.registry.gateway_settings
    warnings = []
    if settings.gateway.base_url.startswith("http://"):
        warnings.append(
            f"gateway.base_url is {settings.gateway.base_url}: plain http is for trying the gateway on this"
            " machine only; put it behind a TLS proxy and set an https URL"
        )
    if not settings.session.cookie_secure:
        warnings.append(
            "session.cookie_secure is false: the session cookie also travels over plain http; set it to true"
        )
    if not settings.gateway.admin_groups and not settings.gateway.admin_users:
        warnings.append(
            "no admin configured: set gateway.admin_groups to the Entra group of your admins"
            " (gateway.admin_users names the first admin until that group is provisioned)"
        )
    return warnings


def includeme(config):
    config.registry.migration_head = migrate.head_revision()
    config.registry.readiness_checks = {"database": check_database}
    # Checks that do not stop readiness but that `gateway CONFIG check` prints
    # as WARN lines: callables taking the request and returning a list of texts.
    config.registry.warning_checks = {"deployment": deployment_warnings}
    config.add_route("health.live", "/healthz")
    config.add_route("health.ready", "/readyz")
    config.scan(__name__)
