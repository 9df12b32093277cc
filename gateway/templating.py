"""HTML pages: Jinja2 templates under one layout, static files, and the security headers.

Every HTML page of the gateway (the admin console, refusal pages, the home
page, a plugin's page) is a template under ``gateway/templates`` extending
``layout.html``, rendered with autoescaping, and leaves through
:func:`secure`, which sets the security headers. The headers are set where
the HTML is made (the :func:`html_page` view decorator, or
:func:`render_page`), not by a tween or a ``NewResponse`` subscriber: either
would switch off forward-auth's fast path (``gateway.forward_auth.FastPath``).

Templates get these helpers besides ``request``: ``form_fields()`` (the CSRF
token and the page to come back to, for every POST form), ``copy_button(id)``
(a button that copies the text of element ``id``; hidden without
JavaScript), and the filters ``when`` (a UTC time), ``ago`` (how long ago),
``browser`` (a User-Agent in a few words) and ``pretty_json``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

import jinja2
from markupsafe import Markup, escape
from pyramid.renderers import render_to_response

#: No inline script or style anywhere: script and style come from /static.
#: ``form-action`` is left out on purpose: a sign-out form's redirect goes
#: on to the IdP's logout URL, and Chromium applies form-action to the
#: redirects that follow a form submission.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin: Pyramid's CSRF origin check over https needs the Referer
    # (or Origin) of our own forms; nothing leaks to other sites.
    "Referrer-Policy": "same-origin",
    # Pages show identities, sessions and secrets shown once: never cached.
    "Cache-Control": "no-store",
}


def secure(response):
    """Put the security headers on an HTML response; return it."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def html_page(view):
    """View decorator (``decorator=html_page``): the response, rendered or returned, gets the headers."""

    @functools.wraps(view)
    def wrapper(context, request):
        return secure(view(context, request))

    return wrapper


def render_page(request, template: str, values: dict, status: int = 200):
    """Render ``template`` (a name under gateway/templates) as a secured HTML response."""
    response = render_to_response(template, values, request=request)
    response.status_int = status
    return secure(response)


# ------------------------------------------------------------------ template helpers


@jinja2.pass_context
def form_fields(context) -> Markup:
    """Hidden inputs every POST form carries: the CSRF token, and the page
    to come back to (after a fresh sign-in, see gateway.admin.access)."""
    request = context["request"]
    identity = request.identity
    token = identity.csrf_token if identity is not None else ""
    return Markup(
        f'<input type="hidden" name="csrf_token" value="{escape(token)}">'
        f'<input type="hidden" name="back" value="{escape(request.path_qs)}">'
    )


def copy_button(target_id: str, label: str = "Copy") -> Markup:
    """A button copying the text of element ``target_id`` (gateway.js shows it; hidden without JavaScript)."""
    return Markup(
        f'<button type="button" class="copy" data-copy="{escape(target_id)}" hidden>'
        f'{escape(label)}<span class="visually-hidden"> {escape(target_id.replace("-", " "))}</span></button>'
    )


def when(value: dt.datetime | None, empty: str = "-") -> Markup:
    if value is None:
        return Markup(escape(empty))
    value = value.astimezone(dt.UTC)
    return Markup(f'<time datetime="{value.isoformat(timespec="seconds")}">{value:%Y-%m-%d %H:%M:%S} UTC</time>')


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - value).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Version/", "Safari"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Mac OS X", "macOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def browser(user_agent: str | None) -> str:
    """A User-Agent header in a few words ("Chrome 120 on Linux"); the page keeps the whole one in a title."""
    if not user_agent:
        return "-"
    name = next((label for token, label in _BROWSERS if token in user_agent), None)
    system = next((label for token, label in _SYSTEMS if token in user_agent), None)
    if name is None:
        return user_agent[:40]
    token = next(t for t, label in _BROWSERS if label == name)
    version = user_agent.split(token, 1)[1].split(".", 1)[0].split(" ", 1)[0]
    return f"{name} {version}" + (f" on {system}" if system else "")


def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _configure_environment(config) -> None:
    env = config.get_jinja2_environment(".html")
    # A misspelt variable is an error in tests, not an empty string in production.
    env.undefined = jinja2.StrictUndefined
    # Block tags leave no blank lines behind in the HTML.
    env.trim_blocks = env.lstrip_blocks = True
    env.globals.update(form_fields=form_fields, copy_button=copy_button)
    env.filters.update(when=when, ago=ago, pretty_json=pretty_json, browser=browser)


def includeme(config):
    config.include("pyramid_jinja2")
    # .html templates with autoescaping (pyramid_jinja2's default), found by
    # name under gateway/templates: renderer="admin/users.html", and
    # {% extends "layout.html" %} from any package's template.
    config.add_jinja2_renderer(".html")
    config.add_jinja2_search_path("gateway:templates", name=".html")
    config.action(None, functools.partial(_configure_environment, config), order=999)
    config.add_static_view("static", "gateway:static", cache_max_age=3600)
