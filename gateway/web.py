"""Cross-cutting request plumbing: the request class, correlation ids, address matching.

Every request gets a correlation id (the client's ``X-Request-Id`` when it
looks like one, else made fresh); it is echoed in the response headers, put
on error pages and in the log, so a person's screenshot leads an admin to the
log line. The header is not trusted for anything: anybody can send one, and
it only labels what they did.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


def correlation_id(request) -> str:
    return correlation_id_for(request.headers.get("X-Request-Id", ""))


def correlation_id_for(supplied: str) -> str:
    """``supplied`` (a client's ``X-Request-Id``) when it is a plausible id, else a fresh one."""
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


def address_in(remote_addr: str, networks) -> bool:
    """Whether the peer address ``remote_addr`` lies in one of ``networks``.

    A server listening on ``[::]`` sees an IPv4 peer as ``::ffff:a.b.c.d``:
    such an address is compared as the IPv4 address it carries.
    """
    try:
        address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
