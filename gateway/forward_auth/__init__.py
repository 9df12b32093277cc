"""Forward-auth: ``GET /auth`` for nginx ``auth_request``, Traefik ``forwardAuth`` and Caddy ``forward_auth``.

The reverse proxy asks before every request to a protected app: 200 with
identity headers when the browser has a live session and the rules allow
it, 401 when signed out (with a sign-in redirect when asked for), 403 when
the rules deny. This is the gateway's hot path: one indexed query for the
session, its user and their groups, and no write on most requests.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from pyramid.response import Response

from .rules import decide, parse_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OriginalRequest:
    """What the browser asked the proxy for (as far as a trusted proxy says)."""

    method: str
    url: str | None
    host: str
    path: str


class ForwardAuth:
    """Compiled forward-auth settings, built once at start-up."""

    def __init__(self, settings):
        fa = settings.forward_auth
        self.rules = parse_rules(fa.rules)
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in fa.trusted_proxies)
        self.allowed_hosts = tuple(h.lower() for h in fa.allowed_hosts)
        self.base_url = settings.gateway.base_url
        self.base_host = (urlsplit(settings.gateway.base_url).hostname or "").lower()
        self.header_names = {
            "user_id": fa.header_user_id,
            "user_name": fa.header_user,
            "email": fa.header_email,
            "display_name": fa.header_name,
            "groups": fa.header_groups,
        }
        self.extra_fields = fa.headers

    # ------------------------------------------------------------------ proxy input

    def is_trusted(self, request) -> bool:
        return self._trusted_address(request.environ.get("REMOTE_ADDR") or "")

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one ForwardAuth per app, few proxy addresses
    def _trusted_address(self, remote_addr: str) -> bool:
        try:
            address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def original_request(self, request) -> OriginalRequest:
        """The original URL from nginx's X-Original-URL or Traefik/Caddy's X-Forwarded-*.

        Headers from an address outside ``forward_auth.trusted_proxies`` are
        ignored: anybody can send them, and believing them would let a
        browser pick which rule applies to it.
        """
        environ = request.environ  # plain dict reads: this runs on every proxied request
        if self.is_trusted(request):
            original = environ.get("HTTP_X_ORIGINAL_URL")
            if original:
                parts = urlsplit(original)
                if parts.scheme in ("http", "https") and parts.hostname:
                    method = environ.get("HTTP_X_ORIGINAL_METHOD", request.method)
                    return OriginalRequest(method, original, parts.hostname.lower(), parts.path or "/")
            host = environ.get("HTTP_X_FORWARDED_HOST")
            if host:
                proto = environ.get("HTTP_X_FORWARDED_PROTO", "https")
                uri = environ.get("HTTP_X_FORWARDED_URI", "/")
                if proto in ("http", "https") and uri.startswith("/"):
                    url = f"{proto}://{host}{uri}"
                    parts = urlsplit(url)
                    method = environ.get("HTTP_X_FORWARDED_METHOD", request.method)
                    return OriginalRequest(method, url, (parts.hostname or "").lower(), parts.path or "/")
        return OriginalRequest(request.method, None, (request.host.split(":", 1)[0]).lower(), request.path)

    # ------------------------------------------------------------------ redirects

    def redirect_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        host = parts.hostname.lower()
        if host == self.base_host:
            return True
        for allowed in self.allowed_hosts:
            if allowed.startswith("*.") and host.endswith(allowed[1:]):
                return True
            if host == allowed:
                return True
        return False

    def signin_url(self, target: str) -> str:
        return f"{self.base_url}/saml/login?next={quote(target, safe='')}"

    # ------------------------------------------------------------------ answers

    def identity_headers(self, identity) -> dict[str, str]:
        values = {
            "user_id": identity.user_id,
            "user_name": identity.user_name,
            "email": identity.email or "",
            "display_name": identity.display_name or identity.user_name,
            "groups": ",".join(g.replace(",", " ") for g in identity.groups),
        }
        headers = {self.header_names[k]: v for k, v in values.items()}
        attributes = identity.attributes or {}
        for name in self.extra_fields:
            value = getattr(identity, name, None) if name in _PROFILE_ATTRIBUTES else attributes.get(name)
            if value is not None:
                headers["X-Auth-Request-" + _header_suffix(name)] = str(value)
        return {k: _header_value(v) for k, v in headers.items()}


_PROFILE_ATTRIBUTES = ("given_name", "family_name", "title", "department")


def _header_suffix(field: str) -> str:
    return "-".join(part.capitalize() for part in field.replace(".", "_").split("_") if part)


def _header_value(value: str) -> str:
    # WSGI headers are latin-1 strings: send UTF-8 bytes through as they are,
    # and never let a value break the header block.
    if value.isascii() and value.isprintable():
        return value
    value = "".join(ch if ch.isprintable() else " " for ch in value)
    return value.encode("utf-8").decode("latin-1")


def auth_view(request):
    fa: ForwardAuth = request.registry.forward_auth
    original = fa.original_request(request)
    identity = request.identity
    if identity is None:
        response = Response(status=401, content_type="text/plain", body=b"signed out\n")
        if "rd" in request.params:
            target = request.params["rd"] or original.url or fa.base_url + "/"
            if fa.redirect_allowed(target):
                # nginx reads Location from the 401 (auth_request_set); Traefik and
                # Caddy copy the answer to the browser, so they get the 302 itself.
                if "X-Forwarded-Uri" in request.headers and fa.is_trusted(request):
                    response.status = 302
                response.location = fa.signin_url(target)
            else:
                log.warning("forward-auth: refused redirect to %r (not in forward_auth.allowed_hosts)", target)
        response.headers["Cache-Control"] = "no-store"
        return response

    if not decide(fa.rules, original.host, original.path, {*identity.groups, *identity.group_ids}):
        return Response(status=403, content_type="text/plain", body=b"forbidden\n",
                        headers={"Cache-Control": "no-store"})
    headerlist = [("Content-Length", "0"), ("Cache-Control", "no-store")]
    headerlist.extend(fa.identity_headers(identity).items())
    return Response(status=200, headerlist=headerlist)


def includeme(config):
    config.registry.forward_auth = ForwardAuth(config.registry.gateway_settings)
    config.add_route("forward_auth.check", "/auth")
    config.add_view(auth_view, route_name="forward_auth.check")
