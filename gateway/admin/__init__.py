"""The admin console: the deployer's window into the gateway (DESIGN.md "Admin console").

Server-rendered pages under ``/admin`` on the one layout
(gateway/templates/admin/base.html), usable without JavaScript. Modules:

- ``access``: :class:`admin_view` (permission, CSRF, security headers,
  recent sign-in for sensitive actions), the 403 and sign-in-again pages;
- ``actions``: what the console and the CLI change (end sessions,
  deactivate, grant admin, SCIM tokens), each an audit row and a user event;
- ``cli``: ``gateway CONFIG users grant-admin|sign-out|deactivate ...``;
- ``health``: what the dashboard says is wrong now;
- ``search``: the user search, indexed at 100,000 users;
- ``views``: one module per page.

Another part of the gateway adds a console page with ``config.add_route``,
an :class:`admin_view` and ``config.add_admin_nav(label, route_name)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlencode

import jinja2
from pyramid.httpexceptions import HTTPSeeOther

from .access import admin_view, back_path, recent_signin, signed_in_recently

__all__ = ["NavEntry", "admin_view", "back_path", "done", "recent_signin", "signed_in_recently"]


@dataclass(frozen=True)
class NavEntry:
    label: str
    route_name: str
    order: int
    #: Also current on the pages below it (``/admin/users/<id>`` for Users).
    prefix_match: bool = True


def add_admin_nav(config, label: str, route_name: str, order: int = 100, prefix_match: bool = True) -> None:
    """Config directive: a link in the console's navigation, sorted by ``order``."""
    entries = config.registry.admin_nav
    entries.append(NavEntry(label, route_name, order, prefix_match))
    entries.sort(key=lambda entry: entry.order)


def add_admin_notice(config, code: str, text: str) -> None:
    """Config directive: the sentence shown for ``?done=<code>`` after an action (see :func:`done`)."""
    config.registry.admin_notices[code] = text


def done(request, code: str, back: str | None = None) -> HTTPSeeOther:
    """Redirect after a console POST to ``back`` (the form's page), showing notice ``code``.

    The notice is looked up by code, so a crafted link cannot put words on
    the page.
    """
    target = back or back_path(request)
    # Drop an earlier notice from the page's own query.
    path, _, query = target.partition("?")
    kept = "&".join(p for p in query.split("&") if p and not p.startswith("done="))
    target = path + ("?" + kept if kept else "")
    separator = "&" if kept else "?"
    return HTTPSeeOther(location=request.application_url + target + separator + urlencode({"done": code}))


@jinja2.pass_context
def admin_notice(context) -> str | None:
    request = context["request"]
    return request.registry.admin_notices.get(request.GET.get("done", ""))


def _template_globals(config) -> None:
    config.get_jinja2_environment(".html").globals["admin_notice"] = admin_notice


def includeme(config):
    registry = config.registry
    registry.admin_nav = []
    registry.admin_notices = {}
    registry.admin_refusal_sources = []
    config.add_directive("add_admin_nav", add_admin_nav)
    config.add_directive("add_admin_notice", add_admin_notice)
    config.action(None, functools.partial(_template_globals, config), order=1000)
    config.include(".access")
    config.include(".health")
    config.include(".views")
