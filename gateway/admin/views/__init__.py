"""The console's pages, one module each; their routes and navigation entries in one place."""

from __future__ import annotations

#: (route name, pattern); routes match in this order.
ROUTES = (
    ("admin.dashboard", "/admin"),
    ("admin.idp", "/admin/idp"),
    ("admin.idp.refresh", "/admin/idp/refresh"),
    ("admin.users", "/admin/users"),
    ("admin.user", "/admin/users/{id}"),
    ("admin.user.action", "/admin/users/{id}/{action}"),
    ("admin.groups", "/admin/groups"),
    ("admin.group", "/admin/groups/{id}"),
    ("admin.sessions", "/admin/sessions"),
    ("admin.sessions.end", "/admin/sessions/end"),
    ("admin.tokens", "/admin/tokens"),
    ("admin.tokens.create", "/admin/tokens/create"),
    ("admin.tokens.revoke", "/admin/tokens/revoke"),
    ("admin.audit", "/admin/audit"),
    ("admin.audit.export", "/admin/audit/export.{format}"),
)

#: (label, route name, order): the navigation, sorted by order. Other
#: console pages add theirs with ``config.add_admin_nav`` between these.
NAV = (
    ("Dashboard", "admin.dashboard", 10),
    ("Identity provider", "admin.idp", 20),
    ("Users", "admin.users", 30),
    ("Groups", "admin.groups", 40),
    ("Sessions", "admin.sessions", 50),
    ("SCIM tokens", "admin.tokens", 60),
    ("Audit", "admin.audit", 90),
)


def includeme(config):
    for name, pattern in ROUTES:
        config.add_route(name, pattern)
    for label, name, order in NAV:
        # The dashboard is /admin itself: only that page makes it current.
        config.add_admin_nav(label, name, order=order, prefix_match=name != "admin.dashboard")
    config.scan(__name__)
