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


#: The sentences shown for ``?done=<code>`` after the actions of these pages.
NOTICES = {
    "session-ended": "The session was ended: that browser is signed out at its next request.",
    "signed-out-everywhere": "Every session of this user was ended.",
    "deactivated": "The user was deactivated and signed out everywhere.",
    "reactivated": "The user was reactivated.",
    "admin-granted": "The user is now an admin.",
    "admin-revoked": "The admin grant was taken back.",
    "token-revoked": "The token was revoked: SCIM requests with it are refused from now on.",
    "idp-refreshed": "The IdP metadata was fetched and is in force.",
    "idp-refresh-failed": "The refresh failed; the copy in force stays. The error is below.",
}


def includeme(config):
    for code, text in NOTICES.items():
        config.add_admin_notice(code, text)
    for name, pattern in ROUTES:
        config.add_route(name, pattern)
    for label, name, order in NAV:
        # The dashboard is /admin itself: only that page makes it current.
        config.add_admin_nav(label, name, order=order, prefix_match=name != "admin.dashboard")
    config.scan(__name__)
