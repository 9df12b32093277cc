"""The gateway's request class: per-request helpers as plain reified properties.

Pyramid's ``config.add_request_method`` builds a new request class on every
request, which costs more than the whole forward-auth check; declaring the
helpers on one subclass, installed with ``set_request_factory``, costs
nothing per request. Each helper lives with its concern; this class only
collects them.
"""

from __future__ import annotations

import pyramid_tm
from pyramid.decorator import reify
from pyramid.request import Request

from . import web
from .accesslog import note_request
from .db import request_dbsession


class GatewayRequest(Request):
    def __init__(self, environ, *args, **kwargs):
        super().__init__(environ, *args, **kwargs)
        # The access log (logging.access) names the route this request matches.
        note_request(self)

    @reify
    def tm(self):
        """The transaction manager pyramid_tm commits or aborts with the request."""
        return pyramid_tm.create_tm(self)

    @reify
    def dbsession(self):
        """The request's SQLAlchemy session, joined to ``request.tm``."""
        return request_dbsession(self)

    @reify
    def correlation_id(self) -> str:
        """The id shown on error pages and logged with every problem, and
        echoed in the response's ``X-Request-Id``."""
        self.add_response_callback(web.echo_correlation_id)
        return web.correlation_id(self)

    @reify
    def application_url(self) -> str:
        """``gateway.base_url``, whatever scheme and host the request came in on.

        Behind a TLS-terminating proxy the request arrives over plain http
        (and maybe under an internal host name); every absolute URL the
        gateway emits (``route_url``, redirects after sign-in and sign-out)
        is built from this, so it must be the external address.
        """
        return self.registry.gateway_settings.gateway.base_url

    @reify
    def host_url(self) -> str:
        """The scheme and host of ``gateway.base_url`` (see ``application_url``)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.registry.gateway_settings.gateway.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @reify
    def client_addr(self) -> str | None:
        """The browser's address, as recorded on sessions, traces and the provisioning log.

        WebOb believes ``X-Forwarded-For`` from anybody, so a client could
        write any address there. Here the header counts only when the peer is
        in ``forward_auth.trusted_proxies``, and then its rightmost address
        that is not a trusted proxy (what the nearest untrusted hop was).
        """
        trusted = self.registry.forward_auth.trusted_address
        peer = self.environ.get("REMOTE_ADDR")
        if not peer or not trusted(peer):
            return peer
        forwarded = [a.strip() for a in self.environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        for address in reversed(forwarded):
            if not trusted(address):
                return address
        return forwarded[0] if forwarded else peer

    @reify
    def hook(self):
        """The plugin manager's hook relay: ``request.hook.gateway_user_event(...)``."""
        return self.registry.pm.hook
