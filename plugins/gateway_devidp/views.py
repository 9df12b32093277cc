"""The development IdP's pages: pick or type a test user, then post back to the ACS."""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
import zlib

from pyramid.response import Response
from pyramid.view import view_config

from gateway.saml.xmlguard import safe_parse
from gateway.templating import render_page

from .directory import name_groups
from .idp import TEST_USERS

_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.\-]{1,190}$")


def _page(request, error: str, status: int = 400):
    return render_page(request, "devidp/pick.html", {"error": error}, status=status)


def loopback_only(view):
    """The development IdP signs anybody in as anybody: only clients on this
    machine may use it, whatever the base URL says (development.ini in a
    container listens on every interface). The peer's own address counts,
    never X-Forwarded-For."""

    @functools.wraps(view)
    def wrapper(context, request):
        try:
            loopback = ipaddress.ip_address(request.environ.get("REMOTE_ADDR") or "").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return Response(
                "The development IdP answers only clients on this machine.\n", status=403, content_type="text/plain"
            )
        return view(context, request)

    return wrapper


@view_config(route_name="devidp.sso", request_method="GET", decorator=loopback_only)
def sso(request):
    """Entra's login URL look-alike: takes the HTTP-Redirect AuthnRequest."""
    request_id = ""
    encoded = request.GET.get("SAMLRequest")
    if encoded:
        try:
            root = safe_parse(zlib.decompress(base64.b64decode(encoded), -15))
            request_id = root.get("ID") or ""
        except Exception:  # noqa: BLE001 - shown as a page, this is a development tool
            return _page(request, "Bad AuthnRequest")
    values = {
        "error": None,
        "users": TEST_USERS,
        "request_id": request_id,
        "relay_state": request.GET.get("RelayState", ""),
    }
    return render_page(request, "devidp/pick.html", values)


@view_config(route_name="devidp.signin", request_method="POST", decorator=loopback_only)
def signin(request):
    email = (request.POST.get("email") or "").strip()
    if not _EMAIL.match(email):
        return _page(request, "That is not an email address")
    known = {e: (n, g) for e, n, g in TEST_USERS}
    name, groups = known.get(email.lower(), (None, ()))
    name = (request.POST.get("display_name") or "").strip() or name or email.split("@")[0].title()
    typed_groups = [g.strip() for g in (request.POST.get("groups") or "").split(",") if g.strip()]
    groups = typed_groups or groups
    # Entra's SCIM would have named these groups; development has no SCIM client.
    name_groups(request.dbsession, groups)
    provider = request.registry.saml_sp
    xml = request.registry.devidp.response(
        email=email,
        display_name=name,
        groups=groups,
        in_response_to=request.POST.get("request_id") or None,
        acs_url=provider.acs_url,
        audience=provider.entity_id,
    )
    values = {
        "acs_url": provider.acs_url,
        "saml_response": base64.b64encode(xml.encode()).decode(),
        "relay_state": request.POST.get("RelayState", ""),
    }
    return render_page(request, "devidp/post.html", values)
