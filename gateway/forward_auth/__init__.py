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
from urllib.parse import quote

from pyramid.response import Response
from webob.request import PATH_SAFE

from ..guard import database_unavailable
from ..metrics import instruments
from ..sessions import cached_identity
from ..web import address_in
from .rules import decide, parse_rules
from .urls import ReturnTargets, host_without_port, normal_path, parse_url

log = logging.getLogger(__name__)

#: Servers that send a ``str`` header value as its UTF-8 bytes, not as PEP 3333's latin-1.
UTF8_HEADER_SERVERS = frozenset({"Granian"})

#: Identity headers larger than this (bytes, all of them) are logged once: nginx's
#: default ``proxy_buffer_size`` is 4 KB, and it answers 500 to a larger header block.
HEADER_BLOCK_WARNING = 3500


@dataclass(frozen=True)
class OriginalRequest:
    """What the browser asked the proxy for (as far as a trusted proxy says).

    ``host`` and ``path`` are in normal form, or None when they have none
    (the rules then deny where they look at them); ``url`` is the URL to
    come back to after sign-in, when it is one a browser reads as Python does.
    """

    method: str
    url: str | None
    host: str | None
    path: str | None
    reported: bool = True  # False: no proxy said, this is the /auth request itself


class ForwardAuth:
    """Compiled forward-auth settings, built once at start-up."""

    def __init__(self, settings):
        fa = settings.forward_auth
        self.proxy = fa.proxy
        self.case_sensitive = fa.case_sensitive_paths
        self.rules = parse_rules(fa.rules, fa.case_sensitive_paths)
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in fa.trusted_proxies)
        self.targets = ReturnTargets(settings.gateway.base_url, fa.allowed_hosts)
        self.base_url = settings.gateway.base_url
        self.header_names = {
            "user_id": fa.header_user_id,
            "user_name": fa.header_user,
            "email": fa.header_email,
            "display_name": fa.header_name,
            "groups": fa.header_groups,
        }
        self.extra_fields = fa.headers
        self.percent = fa.header_encoding == "percent"
        self.passed_groups = _passed_groups(fa.pass_groups, self.rules)
        self._headers: dict[str, tuple] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ proxy input

    def is_trusted(self, environ) -> bool:
        return self.trusted_address(environ.get("REMOTE_ADDR") or "")

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one ForwardAuth per app, few proxy addresses
    def trusted_address(self, remote_addr: str) -> bool:
        """Whether ``remote_addr`` is in ``forward_auth.trusted_proxies``."""
        return address_in(remote_addr, self.trusted)

    def original_request(self, environ) -> OriginalRequest:
        """The original URL from the headers of ``forward_auth.proxy``, and no others.

        nginx sets ``X-Original-URL`` (its configuration overwrites the
        browser's); Traefik and Caddy set ``X-Forwarded-*`` and pass every
        other header the browser sent, ``X-Original-URL`` included, so each
        proxy's own set is the only one read. Headers from an address outside
        ``forward_auth.trusted_proxies`` are never read: anybody can send them.
        """
        # Plain dict reads of the WSGI environ: this runs on every proxied request.
        method = environ.get("REQUEST_METHOD", "GET")
        proxy = self.proxy
        if proxy and self.is_trusted(environ):
            if proxy == "nginx":
                url = environ.get("HTTP_X_ORIGINAL_URL")
                if url is not None:
                    return self._reported(environ.get("HTTP_X_ORIGINAL_METHOD") or method, url)
            else:
                host = environ.get("HTTP_X_FORWARDED_HOST")
                uri = environ.get("HTTP_X_FORWARDED_URI")
                if host is not None and uri is not None:
                    proto = environ.get("HTTP_X_FORWARDED_PROTO", "https")
                    return self._forwarded(environ.get("HTTP_X_FORWARDED_METHOD") or method, proto, host, uri)
        elif not proxy and ("HTTP_X_ORIGINAL_URL" in environ or "HTTP_X_FORWARDED_URI" in environ):
            if self.is_trusted(environ):
                self._warn_once(
                    "proxy",
                    "forward-auth: a proxy sends the original URL, but forward_auth.proxy is not"
                    " set; signed-out browsers come back to the gateway, not to the page they asked for",
                )
        # The /auth request itself (WebOb's request.host and request.path).
        return self._itself(
            method,
            environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        )

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - bounded; the same few URLs come again and again
    def _reported(self, method: str, url: str) -> OriginalRequest:
        parsed = parse_url(url)
        if parsed is None:
            return OriginalRequest(method, None, None, None)
        path = re.split(r"[?#]", parsed.path_and_query, maxsplit=1)[0] or "/"
        return OriginalRequest(method, url, parsed.host, normal_path(path, self.case_sensitive))

    def _forwarded(self, method: str, proto: str, host: str, uri: str) -> OriginalRequest:
        # Each part alone must be what a proxy sends, so that no part can carry
        # another into the URL ("@", "/" in the host; a URI not starting with "/").
        if proto not in ("http", "https") or not uri.startswith("/") or host_without_port(host) is None:
            return OriginalRequest(method, None, None, None)
        return self._reported(method, f"{proto}://{host}{uri}")

    @functools.lru_cache(maxsize=256)  # noqa: B019 - bounded
    def _itself(self, method: str, host: str, path: str) -> OriginalRequest:
        path = normal_path(quote(path.encode("latin-1"), safe=PATH_SAFE), self.case_sensitive)
        return OriginalRequest(method, None, host_without_port(host), path, reported=False)

    # ------------------------------------------------------------------ redirects

    def return_target(self, rd: str, original: OriginalRequest) -> str | None:
        """Where a signed-out browser comes back to: ``rd``, else the original URL; None when not allowed.

        Without a URL from the proxy (no ``forward_auth.proxy``, or an
        address not trusted) that is the gateway's home page.
        """
        if rd:
            return self.targets.check(rd)
        if original.reported:
            return self.targets.check(original.url) if original.url else None
        return "/"

    def signin_url(self, target: str) -> str:
        return f"{self.base_url}/saml/login?next={quote(target, safe='')}"

    # ------------------------------------------------------------------ answers

    def allows(self, original: OriginalRequest, identity) -> bool:
        if not self.rules:
            return True
        return decide(self.rules, original.host, original.path, {*identity.groups, *identity.group_ids})

    def allowed_headers(self, identity, environ) -> list[tuple[str, str]]:
        """The 200's header list; built once per cached identity object."""
        utf8 = environ.get("SERVER_SOFTWARE") in UTF8_HEADER_SERVERS
        key = identity.session_hash
        known = self._headers.get(key)
        if known is not None and known[0] is identity and known[1] == utf8:
            return list(known[2])
        headers = [("Content-Length", "0"), ("Cache-Control", "no-store"), *self.identity_headers(identity, utf8)]
        if len(self._headers) >= 50_000:
            self._headers.clear()
        self._headers[key] = (identity, utf8, tuple(headers))
        return headers

    def forget_headers(self) -> None:
        """Drop the header lists (the identity cache was dropped: their identities are stale)."""
        self._headers.clear()

    def identity_headers(self, identity, utf8_server: bool = False) -> list[tuple[str, str]]:
        """The identity headers, as ``str`` values this server sends as their UTF-8 bytes.

        PEP 3333 servers (waitress) write each code point as one byte, so
        they get the UTF-8 bytes spelled as latin-1; Granian encodes a ``str``
        as UTF-8 itself, so it gets the text. With
        ``forward_auth.header_encoding = percent`` every value is ASCII.
        """
        groups = identity.groups
        if self.passed_groups is not None:
            groups = [g for g in groups if g in self.passed_groups]
        values = {
            "user_id": identity.user_id,
            "user_name": identity.user_name,
            "email": identity.email or "",
            "display_name": identity.display_name or identity.user_name,
        }
        headers = [(self.header_names[k], self._value(v, utf8_server)) for k, v in values.items()]
        if self.percent:
            joined = ",".join(self._value(g, utf8_server) for g in groups)
        else:
            joined = self._value(",".join(g.replace(",", " ") for g in groups), utf8_server)
        headers.append((self.header_names["groups"], joined))
        attributes = identity.attributes or {}
        for name in self.extra_fields:
            value = getattr(identity, name, None) if name in _PROFILE_ATTRIBUTES else attributes.get(name)
            if value is not None:
                headers.append(("X-Auth-Request-" + _header_suffix(name), self._value(str(value), utf8_server)))
        size = sum(len(k) + len(v.encode("utf-8" if utf8_server else "latin-1")) + 4 for k, v in headers)
        if size > HEADER_BLOCK_WARNING:
            self._warn_once(
                "size",
                f"forward-auth: identity headers of {size} bytes ({len(groups)} groups); nginx needs"
                " proxy_buffer_size above its 4k default, or set forward_auth.pass_groups",
            )
        return headers

    def _value(self, value: str, utf8_server: bool) -> str:
        if self.percent:
            return _percent(value)
        if value.isascii() and value.isprintable():
            return value
        # Never let a value break the header block: CR, LF and the other control
        # characters become spaces. Format characters stay: a zero-width
        # (non-)joiner is part of many names and of emoji.
        value = _CONTROL.sub(" ", value)
        return value if utf8_server else value.encode("utf-8").decode("latin-1")

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)


_PROFILE_ATTRIBUTES = ("given_name", "family_name", "title", "department")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Printable ASCII but "%" (the escape) and "," (the groups separator) stays as it is.
_PERCENT_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%,")


def _percent(value: str) -> str:
    return quote(value, safe=_PERCENT_SAFE)


def _passed_groups(setting: tuple[str, ...], rules) -> frozenset[str] | None:
    """The group names and ids that go into the groups header; None for all."""
    if setting == ("all",):
        return None
    if setting == ("rules",):
        return frozenset(g for rule in rules for g in rule.groups if g != "*")
    return frozenset(setting)


def _header_suffix(field: str) -> str:
    return "-".join(part.capitalize() for part in field.replace(".", "_").split("_") if part)


def auth_view(request):
    fa: ForwardAuth = request.registry.forward_auth
    original = fa.original_request(request.environ)
    identity = request.identity
    if identity is None:
        response = Response(status=401, content_type="text/plain", body=b"signed out\n")
        if "rd" in request.params:
            target = fa.return_target(request.params["rd"], original)
            if target is not None:
                # nginx reads Location from the 401 (auth_request_set); Traefik and
                # Caddy copy the answer to the browser, so they get the 302 itself.
                if fa.proxy in ("traefik", "caddy"):
                    response.status = 302
                response.location = fa.signin_url(target)
            else:
                log.warning(
                    "forward-auth: refused redirect to %r (not a URL on an allowed host)",
                    (request.params["rd"] or original.url or "")[:200],
                )
        response.headers["Cache-Control"] = "no-store"
        instruments.FORWARD_AUTH_UNAUTHENTICATED.inc()
        return response

    if not fa.allows(original, identity):
        instruments.FORWARD_AUTH_DENY.inc()
        return Response(
            status=403, content_type="text/plain", body=b"forbidden\n", headers={"Cache-Control": "no-store"}
        )
    instruments.FORWARD_AUTH_ALLOW.inc()
    return Response(status=200, headerlist=fa.allowed_headers(identity, request.environ))


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
            try:
                headers = self._allowed(environ)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                headers = None  # the app behind (gateway.guard) answers 503
            if headers is not None:
                instruments.FORWARD_AUTH_ALLOW.inc()
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
        return self.fa.allowed_headers(identity, environ)


def fast_path(app, registry):
    """``app`` behind :class:`FastPath`, unless plugins changed how /auth is answered."""
    changed = _changed_by_plugins(registry)
    if changed:
        log.info("forward-auth: a plugin changed %s; every /auth request goes through Pyramid", changed)
        return app
    return FastPath(app, registry)


def _changed_by_plugins(registry) -> str | None:
    """What of the Pyramid set-up that the fast path relies on is not the core's own."""
    from pyramid.interfaces import IExecutionPolicy, IRequestFactory, ISecurityPolicy

    from ..request import GatewayRequest
    from ..sessions import SessionSecurityPolicy

    # Tweens and view derivers as Pyramid's (public) introspector lists them.
    names = {intr["name"] for intr in _introspected(registry, "tweens")}
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
    if _view_derivers(registry) != _default_view_derivers():
        return "the view derivers"
    views = [
        entry["introspectable"]
        for entry in registry.introspector.get_category("views", ())
        if entry["introspectable"].get("route_name") == "forward_auth.check"
    ]
    if len(views) != 1 or views[0].get("callable") is not auth_view:
        return "the /auth view"
    return None


def _introspected(registry, category: str) -> list:
    return [entry["introspectable"] for entry in registry.introspector.get_category(category, ())]


def _view_derivers(registry) -> set:
    """Each view deriver, where it goes and what it is: a plugin's addition, or a default put elsewhere, differs."""
    return {
        (intr["name"], intr["deriver"], repr(intr["under"]), repr(intr["over"]))
        for intr in _introspected(registry, "view derivers")
    }


@functools.cache
def _default_view_derivers() -> set:
    from pyramid.config import Configurator

    config = Configurator(settings={})
    config.commit()
    return _view_derivers(config.registry)


def includeme(config):
    config.registry.forward_auth = fa = ForwardAuth(config.registry.gateway_settings)
    # The header lists hold the identities they were built from: they go when those do.
    # Kept past them, every session ever checked stayed in memory until 50,000 had
    # (about 2 KB each: the soak's steady 0.3 MB a minute per worker, bench/soak.py).
    cache = getattr(config.registry, "identity_cache", None)
    if cache is not None:
        cache.on_clear(fa.forget_headers)
    config.add_route("forward_auth.check", "/auth")
    config.add_view(auth_view, route_name="forward_auth.check")
