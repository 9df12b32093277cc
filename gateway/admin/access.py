"""Who may use the admin console, and how a console view is declared.

A console view is declared with :class:`admin_view` instead of
``view_config``. It then:

- needs the ``admin`` permission (``users.is_admin``, kept by
  gateway/provisioning/groups.py from ``gateway.admin_groups``,
  ``gateway.admin_users`` and CLI grants). An anonymous visitor is sent
  through ``/saml/login`` and back; a signed-in non-admin gets a 403 page
  that says why and offers sign-out and another account;
- refuses a POST without the session's CSRF token (Pyramid's CSRF support,
  with the token of the session row: ``sessions.SessionCSRFStoragePolicy``),
  with a 403 page;
- leaves with the security headers (``templating.html_page``);
- with ``sensitive=True``, runs only when the admin signed in within
  ``admin.reauth_seconds``; otherwise the admin is sent through a fresh
  sign-in at the IdP (ForceAuthn) and back to the page the form was on.
"""

from __future__ import annotations

import datetime as dt
import functools

from pyramid.exceptions import BadCSRFOrigin, BadCSRFToken
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from ..db.models import utcnow
from ..forward_auth.urls import local_path
from ..saml import browser
from ..saml.errors import SamlRejection, rejection_response
from ..templating import html_page, render_page

#: Every console URL: the 403 and CSRF pages below apply only here.
ADMIN_PATHS = r"^/admin(/|$)"


class admin_view(view_config):  # noqa: N801 - a decorator, named like view_config
    """``@admin_view(route_name="admin.users", renderer="admin/users.html")``.

    Takes ``view_config``'s arguments, with these defaults: ``permission``
    ``admin``, ``require_csrf`` True, ``request_method`` GET. ``sensitive``
    (default False) asks for a recent sign-in. ``decorator`` entries given
    run inside the security headers and the recent sign-in check.
    """

    def __init__(self, *, sensitive: bool = False, **settings):
        settings.setdefault("permission", "admin")
        settings.setdefault("require_csrf", True)
        settings.setdefault("request_method", "GET")
        extra = settings.pop("decorator", ())
        extra = extra if isinstance(extra, (tuple, list)) else (extra,)
        settings["decorator"] = (html_page, *((recent_signin,) if sensitive else ()), *extra)
        super().__init__(**settings)


# ------------------------------------------------------------------ recent sign-in


def signed_in_recently(request) -> bool:
    """Whether this session started (a sign-in at the IdP) within ``admin.reauth_seconds``."""
    identity = request.identity
    if identity is None:
        return False
    limit = dt.timedelta(seconds=request.registry.gateway_settings.admin.reauth_seconds)
    return utcnow() - identity.created_at <= limit


def back_path(request, default: str = "/admin") -> str:
    """The console page a form came from (its ``back`` field), else ``default``.

    Only a console path is accepted: it is where the admin is sent after a
    fresh sign-in or an action.
    """
    value = request.POST.get("back") if request.method == "POST" else request.path_qs
    path = local_path(value) if value else None
    return path if path and is_console_path(path) else default


def is_console_path(path: str) -> bool:
    return path == "/admin" or path.startswith(("/admin/", "/admin?"))


def fresh_signin_url(request, next_path: str) -> str:
    return request.route_url("admin.reauth", _query={"next": next_path})


def recent_signin(view):
    """View decorator: past ``admin.reauth_seconds`` since sign-in, sign in again first.

    A POST cannot be replayed through the IdP, so the admin comes back to
    the page the form was on and submits it again, now recently signed in.
    """

    @functools.wraps(view)
    def wrapper(context, request):
        if signed_in_recently(request):
            return view(context, request)
        return HTTPSeeOther(location=fresh_signin_url(request, back_path(request)))

    return wrapper


@view_config(route_name="admin.reauth", request_method="GET", decorator=html_page)
def fresh_signin(request):
    """Start a sign-in with ForceAuthn, coming back to ``next`` (a console path).

    Used for the recent sign-in that sensitive actions need and for "Sign in
    as someone else" on the 403 page; open to anybody, like /saml/login.
    """
    next_path = local_path(request.GET.get("next") or "/admin")
    if next_path is None or not is_console_path(next_path):
        next_path = "/admin"
    try:
        request_id, location = request.registry.saml_sp.authn_request(force_authn=True)
    except SamlRejection as exc:
        return rejection_response(request, exc)
    browser.remember(request, request_id, "authn", next_path)
    return HTTPSeeOther(location=location)


# ------------------------------------------------------------------ refusals


def refused(exc, request):
    """HTTPForbidden on a console URL: sign in and come back, or the 403 page."""
    if request.identity is None:
        next_path = request.path_qs if request.method == "GET" else back_path(request)
        return HTTPSeeOther(location=request.route_url("saml.login", _query={"next": next_path}))
    return render_page(
        request,
        "admin/forbidden.html",
        {
            "reason": "not_admin",
            "switch_url": fresh_signin_url(request, request.path_qs if request.method == "GET" else "/admin"),
        },
        status=403,
    )


def bad_csrf(exc, request):
    """A console POST without the session's CSRF token (or from another origin): 403."""
    return render_page(
        request,
        "admin/forbidden.html",
        {"reason": "csrf", "switch_url": fresh_signin_url(request, "/admin")},
        status=403,
    )


def not_found(exc, request):
    """No such console page, user or group: the 404 on the layout, with the headers."""
    return render_page(request, "admin/not_found.html", {}, status=404)


def includeme(config):
    config.add_route("admin.reauth", "/admin/reauth")
    config.add_forbidden_view(refused, path_info=ADMIN_PATHS)
    config.add_notfound_view(not_found, path_info=ADMIN_PATHS)
    config.add_exception_view(bad_csrf, context=BadCSRFToken, path_info=ADMIN_PATHS)
    config.add_exception_view(bad_csrf, context=BadCSRFOrigin, path_info=ADMIN_PATHS)
    config.scan(__name__)


__all__ = ["admin_view", "back_path", "recent_signin", "signed_in_recently"]
