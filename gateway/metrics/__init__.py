"""``GET /metrics``: Prometheus text, added up over every worker process.

Not public: what it shows (how many people are signed in, when each SCIM
token was last used, refusals by reason) helps an attacker time an attack.
Only clients whose own address (``REMOTE_ADDR``; forwarded headers are never
believed here, anybody can send them) is in ``metrics.allow`` may scrape,
by default loopback; when ``metrics.token`` is set the scraper must also
send it as a bearer token. docs/operations.md says how to scrape from
another host.
"""

from __future__ import annotations

import hmac
import ipaddress

from pyramid.httpexceptions import HTTPForbidden, HTTPUnauthorized
from pyramid.response import Response

from ..web import address_in


class MetricsAccess:
    """``metrics.allow`` and ``metrics.token``, compiled once."""

    def __init__(self, settings):
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.metrics.allow)
        self.token = settings.metrics.token.encode()

    def address_allowed(self, remote_addr: str) -> bool:
        return address_in(remote_addr, self.networks)

    def token_accepted(self, authorization: str) -> bool:
        if not self.token:
            return True
        scheme, _, presented = authorization.partition(" ")
        # Compared in constant time, so that the answer's timing tells nothing of the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self.token)


def metrics_view(request):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from .archive import fold_dead_workers, locked
    from .collector import ScrapeCollector
    from .directory import ensure

    access: MetricsAccess = request.registry.metrics_access
    if not access.address_allowed(request.environ.get("REMOTE_ADDR") or ""):
        return HTTPForbidden(body="metrics: this address is not in metrics.allow\n", content_type="text/plain")
    if not access.token_accepted(request.headers.get("Authorization", "")):
        response = HTTPUnauthorized(body="metrics: bearer token required\n", content_type="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # A registry per scrape: what is read now, and the workers' files (counters
    # of replaced workers included). No process_* collectors: in multiprocess
    # mode they would describe only the worker that happens to answer.
    # What is read now goes first: a metadata load it sets off is in this scrape's counters.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(request.registry))
    path = ensure()
    MultiProcessCollector(registry, path=path)
    # Dead workers' files folded into one archive first, so that scrapes stay fast.
    fold_dead_workers(path)
    with locked(path, exclusive=False):
        text = generate_latest(registry)
    response = Response(text)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


def includeme(config):
    # The counters are in use from here on: the multiprocess directory is set before prometheus_client loads.
    from . import instruments  # noqa: F401

    config.registry.metrics_access = MetricsAccess(config.registry.gateway_settings)
    config.add_route("metrics", "/metrics")
    config.add_view(metrics_view, route_name="metrics", request_method="GET")
