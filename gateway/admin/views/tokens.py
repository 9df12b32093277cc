"""``/admin/tokens``: SCIM bearer tokens: list, "Create token" (the secret shown once), "Revoke"."""

from __future__ import annotations

from ...scim import tokens
from ...templating import render_page
from .. import actions, done
from ..access import admin_view
from ..health import TOKEN_UNUSED_DAYS
from .users import refused_page


def _page(request, created: tuple[str, str] | None = None, error: str | None = None, name: str = ""):
    return render_page(
        request,
        "admin/tokens.html",
        {
            "tokens": tokens.list_tokens(request.dbsession),
            "created": created,
            "error": error,
            "name": name,
            "unused_days": TOKEN_UNUSED_DAYS,
            "scim_url": request.application_url + "/scim/v2",
        },
        status=400 if error else 200,
    )


@admin_view(route_name="admin.tokens")
def token_list(request):
    return _page(request)


@admin_view(route_name="admin.tokens.create", request_method="POST", sensitive=True)
def create(request):
    """The secret is in this response only: it is not stored, and the page is never cached."""
    name = request.POST.get("name", "").strip()
    try:
        secret = actions.create_token(actions.Actor.from_request(request), name)
    except actions.ActionRefused as exc:
        return _page(request, error=str(exc), name=name[:128])
    return _page(request, created=(name, secret))


@admin_view(route_name="admin.tokens.revoke", request_method="POST", sensitive=True)
def revoke(request):
    try:
        actions.revoke_token(actions.Actor.from_request(request), request.POST.get("name", ""))
    except actions.ActionRefused as exc:
        return refused_page(request, str(exc), request.route_path("admin.tokens"))
    return done(request, "token-revoked", request.route_path("admin.tokens"))
