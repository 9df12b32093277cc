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
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from pyramid.response import Response
from webob.request import PATH_SAFE

from ..sessions import cached_identity
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
        self._headers: dict[str, tuple] = {}

    # ------------------------------------------------------------------ proxy input

    def is_trusted(self, environ) -> bool:
        return self._trusted_address(environ.get("REMOTE_ADDR") or "")

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one ForwardAuth per app, few proxy addresses
    def _trusted_address(self, remote_addr: str) -> bool:
        try:
            address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def original_request(self, environ) -> OriginalRequest:
        """The original URL from nginx's X-Original-URL or Traefik/Caddy's X-Forwarded-*.

        Headers from an address outside ``forward_auth.trusted_proxies`` are
        ignored: anybody can send them, and believing them would let a
        browser pick which rule applies to it.
        """
        # Plain dict reads of the WSGI environ: this runs on every proxied request.
        method = environ.get("REQUEST_METHOD", "GET")
        if self.is_trusted(environ):
            original = environ.get("HTTP_X_ORIGINAL_URL")
            if original:
                parts = urlsplit(original)
                if parts.scheme in ("http", "https") and parts.hostname:
                    return OriginalRequest(environ.get("HTTP_X_ORIGINAL_METHOD", method), original, parts.hostname.lower(), parts.path or "/")
            host = environ.get("HTTP_X_FORWARDED_HOST")
            if host:
                proto = environ.get("HTTP_X_FORWARDED_PROTO", "https")
                uri = environ.get("HTTP_X_FORWARDED_URI", "/")
                if proto in ("http", "https") and uri.startswith("/"):
                    url = f"{proto}://{host}{uri}"
                    parts = urlsplit(url)
                    return OriginalRequest(environ.get("HTTP_X_FORWARDED_METHOD", method), url, (parts.hostname or "").lower(), parts.path or "/")
        # The /auth request itself, read as WebOb reads request.host and request.path.
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        path = quote((environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1"), safe=PATH_SAFE)
        return OriginalRequest(method, None, host.split(":", 1)[0].lower(), path)

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

    def allows(self, original: OriginalRequest, identity) -> bool:
        return decide(self.rules, original.host, original.path, {*identity.groups, *identity.group_ids})

    def allowed_headers(self, identity) -> list[tuple[str, str]]:
        """The 200's header list; built once per cached identity object."""
        key = identity.session_hash
        known = self._headers.get(key)
        if known is not None and known[0] is identity:
            return list(known[1])
        headers = [("Content-Length", "0"), ("Cache-Control", "no-store"), *self.identity_headers(identity).items()]
        if len(self._headers) >= 50_000:
            self._headers.clear()
        self._headers[key] = (identity, tuple(headers))
        return headers

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
    original = fa.original_request(request.environ)
    identity = request.identity
    if identity is None:
        response = Response(status=401, content_type="text/plain", body=b"signed out\n")
        if "rd" in request.params:
            target = request.params["rd"] or original.url or fa.base_url + "/"
            if fa.redirect_allowed(target):
                # nginx reads Location from the 401 (auth_request_set); Traefik and
                # Caddy copy the answer to the browser, so they get the 302 itself.
                if "X-Forwarded-Uri" in request.headers and fa.is_trusted(request.environ):
                    response.status = 302
                response.location = fa.signin_url(target)
            else:
                log.warning("forward-auth: refused redirect to %r (not in forward_auth.allowed_hosts)", target)
        response.headers["Cache-Control"] = "no-store"
        return response

    if not fa.allows(original, identity):
        return Response(status=403, content_type="text/plain", body=b"forbidden\n",
                        headers={"Cache-Control": "no-store"})
    return Response(status=200, headerlist=fa.allowed_headers(identity))


class FastPath:
    """WSGI wrapper that answers ``GET /auth`` from memory before Pyramid.

    Nearly every forward-auth request is a signed-in person whom the rules
    allow, with their identity in the identity cache: that answer (200 and
    the same headers :func:`auth_view` sends) is given here, without
    Pyramid's request, routing, tweens and response objects, which cost
    more than the check itself. Everything else (no cookie, an identity not
    in memory, a refusal, a redirect, any other URL) goes to the app,
    unchanged. It is installed only while no plugin changes what answering
    /auth involves in Pyramid (its view, tweens, event subscribers, view
    derivers, security or execution policy, request factory), which a
    request answered here would skip.
    """

    def __init__(self, app, registry):
        self.app = app
        self.registry = registry
        self.fa: ForwardAuth = registry.forward_auth
        name = re.escape(registry.gateway_settings.session.cookie_name)
        self._cookie = re.compile(rf"(?:^|;)\s*{name}=([^;\s]*)")

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/auth" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            headers = self._allowed(environ)
            if headers is not None:
                start_response("200 OK", headers)
                return [b""]
        return self.app(environ, start_response)

    def _allowed(self, environ):
        cookies = environ.get("HTTP_COOKIE", "")
        if '"' in cookies or "\\" in cookies or "," in cookies:
            return None  # quoted values and odd separators: the app decides, as WebOb parses them
        tokens = self._cookie.findall(cookies)
        if len(tokens) != 1:
            return None  # none, or the name sent twice: likewise
        identity = cached_identity(self.registry, tokens[0])
        if identity is None or not self.fa.allows(self.fa.original_request(environ), identity):
            return None
        return self.fa.allowed_headers(identity)


def fast_path(app, registry):
    """``app`` behind :class:`FastPath`, unless plugins changed how /auth is answered."""
    changed = _changed_by_plugins(registry)
    if changed:
        log.info("forward-auth: a plugin changed %s; every /auth request goes through Pyramid", changed)
        return app
    return FastPath(app, registry)


def _changed_by_plugins(registry) -> str | None:
    """What of the Pyramid set-up that the fast path relies on is not the core's own."""
    from pyramid.interfaces import IExecutionPolicy, IRequestFactory, ISecurityPolicy, ITweens, IViewDerivers

    from ..request import GatewayRequest
    from ..sessions import SessionSecurityPolicy

    tweens = registry.queryUtility(ITweens)
    names = {name for name, _ in (tweens.explicit or tweens.implicit())} if tweens else set()
    if names - {"pyramid_tm.tm_tween_factory", "pyramid.tweens.excview_tween_factory"}:
        return "the tweens"
    if list(registry.registeredHandlers()):
        return "the event subscribers"
    if not isinstance(registry.queryUtility(ISecurityPolicy), SessionSecurityPolicy):
        return "the security policy"
    if registry.queryUtility(IRequestFactory) is not GatewayRequest:
        return "the request factory"
    policy = registry.queryUtility(IExecutionPolicy)
    if policy is not None and getattr(policy, "__module__", "") != "pyramid_retry":
        return "the execution policy"
    if [name for name, _ in registry.getUtility(IViewDerivers).sorted()] != _default_view_derivers():
        return "the view derivers"
    views = [
        entry["introspectable"] for entry in registry.introspector.get_category("views", ())
        if entry["introspectable"].get("route_name") == "forward_auth.check"
    ]
    if len(views) != 1 or views[0].get("callable") is not auth_view:
        return "the /auth view"
    return None


@functools.cache
def _default_view_derivers() -> list[str]:
    from pyramid.config import Configurator
    from pyramid.interfaces import IViewDerivers

    config = Configurator(settings={})
    config.commit()
    return [name for name, _ in config.registry.getUtility(IViewDerivers).sorted()]


def includeme(config):
    config.registry.forward_auth = ForwardAuth(config.registry.gateway_settings)
    config.add_route("forward_auth.check", "/auth")
    config.add_view(auth_view, route_name="forward_auth.check")
