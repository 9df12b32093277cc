"""``/admin/test``: start a test sign-in, or make a one-time test link for a test user.

The round trip and the report are :mod:`gateway.saml.testsignin`'s; this is
the console page and its two buttons. Both are audited: a test link is a way
into the IdP's sign-in on the admin's behalf, so who made it is recorded.
"""

from __future__ import annotations

from ..saml import testsignin, traces
from ..saml.testsignin import LINK_LIFETIME
from . import actions
from .access import admin_view


def _page(request, new_link: str | None = None) -> dict:
    return {
        "recent": traces.search(request.dbsession, kind="test", limit=10),
        "links": testsignin.open_links(request.dbsession),
        "new_link": new_link,
        "link_minutes": int(LINK_LIFETIME.total_seconds() // 60),
        "acs_url": request.registry.saml_sp.acs_url,
    }


@admin_view(route_name="admin.test", renderer="admin/test.html")
def test_page(request):
    return _page(request)


@admin_view(route_name="admin.test.start", request_method="POST")
def start(request):
    actor = actions.Actor.from_request(request)
    actions.record(actor, "admin.test_signin.start", "signin", target_name=request.identity.user_name)
    return testsignin.start(request, actor.name)


@admin_view(route_name="admin.test.link", request_method="POST", renderer="admin/test.html")
def create_link(request):
    actor = actions.Actor.from_request(request)
    url = testsignin.create_link(request, actor.name)
    actions.record(actor, "admin.test_link.create", "signin")
    # Shown once, on this page: only its hash is stored.
    return _page(request, new_link=url)


def includeme(config):
    config.add_route("admin.test", "/admin/test")
    config.add_route("admin.test.start", "/admin/test/start")
    config.add_route("admin.test.link", "/admin/test/link")
    config.add_admin_nav("Test sign-in", "admin.test", order=95)
    config.scan(__name__)
    # The test user's link page and the answer at the ACS.
    config.include("gateway.saml.testsignin")
