"""Cross-cutting request plumbing: correlation ids and the JSON renderer.

Every request gets a correlation id (taken from a trusted ``X-Request-Id`` or
made fresh); it is echoed in the response headers, put on error pages and in
the log, so a person's screenshot leads an admin to the log line.
"""

from __future__ import annotations

import re
import secrets

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


def correlation_id(request) -> str:
    supplied = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.match(supplied):
        return supplied
    return secrets.token_hex(8)


def echo_correlation_id(request, response) -> None:
    """Response callback, added when a request first asks for its correlation
    id: the response carries it as ``X-Request-Id``. (A ``NewResponse``
    subscriber would do the same, but any subscriber makes Pyramid dispatch
    four events on every request.)"""
    response.headers.setdefault("X-Request-Id", request.correlation_id)


def includeme(config):
    from .request import GatewayRequest

    config.set_request_factory(GatewayRequest)
