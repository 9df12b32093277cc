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
from .db import request_dbsession


class GatewayRequest(Request):
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
    def hook(self):
        """The plugin manager's hook relay: ``request.hook.gateway_user_event(...)``."""
        return self.registry.pm.hook
