"""The development IdP's pages: pick or type a test user, then post back to the ACS."""

from __future__ import annotations

import base64
import html
import re
import zlib

from pyramid.response import Response
from pyramid.view import view_config

from gateway.saml.xmlguard import safe_parse

from .directory import name_groups
from .idp import TEST_USERS

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Development IdP</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
.warn{{background:#fff3cd;padding:.5rem 1rem}} button{{font-size:1rem;margin:.2rem 0;padding:.4rem .8rem}}</style></head>
<body><p class="warn">Development IdP: not Microsoft Entra ID. Anybody can sign in as anybody here.</p>{body}</body></html>"""

_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.\-]{1,190}$")


def _html(body: str, status: int = 200) -> Response:
    response = Response(PAGE.format(body=body), status=status, content_type="text/html")
    response.charset = "utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


@view_config(route_name="devidp.sso", request_method="GET")
def sso(request):
    """Entra's login URL look-alike: takes the HTTP-Redirect AuthnRequest."""
    esc = html.escape
    request_id = ""
    encoded = request.GET.get("SAMLRequest")
    if encoded:
        try:
            root = safe_parse(zlib.decompress(base64.b64decode(encoded), -15))
            request_id = root.get("ID") or ""
        except Exception:  # noqa: BLE001 - shown as a page, this is a development tool
            return _html("<h1>Bad AuthnRequest</h1>", status=400)
    relay = request.GET.get("RelayState", "")
    hidden = (
        f'<input type="hidden" name="request_id" value="{esc(request_id)}">'
        f'<input type="hidden" name="RelayState" value="{esc(relay)}">'
    )
    buttons = "".join(
        f'<form method="post" action="{esc(request.route_path("devidp.signin"))}">{hidden}'
        f'<input type="hidden" name="email" value="{esc(email)}">'
        f'<button type="submit" name="pick" data-email="{esc(email)}">{esc(name)} &lt;{esc(email)}&gt;'
        f" ({esc(', '.join(groups))})</button></form>"
        for email, name, groups in TEST_USERS
    )
    typed = (
        f'<form method="post" action="{esc(request.route_path("devidp.signin"))}">{hidden}'
        '<label>Email <input name="email" type="email" required></label> '
        '<label>Name <input name="display_name"></label> '
        '<label>Groups <input name="groups" placeholder="Staff, Admins"></label> '
        '<button type="submit">Sign in</button></form>'
    )
    return _html(f"<h1>Pick a test user</h1>{buttons}<h2>Or type one</h2>{typed}")


@view_config(route_name="devidp.signin", request_method="POST")
def signin(request):
    email = (request.POST.get("email") or "").strip()
    if not _EMAIL.match(email):
        return _html("<h1>That is not an email address</h1>", status=400)
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
    esc = html.escape
    relay = request.POST.get("RelayState", "")
    relay_input = f'<input type="hidden" name="RelayState" value="{esc(relay)}">' if relay else ""
    # Like Entra: an auto-submitting HTTP-POST form to the ACS.
    body = (
        f'<form id="post" method="post" action="{esc(provider.acs_url)}">'
        f'<input type="hidden" name="SAMLResponse" value="{base64.b64encode(xml.encode()).decode()}">{relay_input}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        "<script>document.getElementById('post').submit()</script>"
    )
    return _html(body)
