"""``gateway CONFIG users grant-admin|revoke-admin|sign-out|deactivate|reactivate USERNAME``.

What the console changes about a user, from the shell (scripts need no
browser). Unlike ``users list``/``show`` these build the app as ``pserve``
does, so that the plugins see the ``gateway_user_event`` of each change
(webhooks, audit sinks), and run one transaction each, with the same
functions as the console (gateway/admin/actions.py), actor ``cli``.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

#: sub-command -> help
ACTIONS = {
    "grant-admin": "make USERNAME an admin whatever their groups; kept through group syncs (the first admin, too)",
    "revoke-admin": "take back a grant-admin (an admin group or gateway.admin_users still counts)",
    "sign-out": "end every session of USERNAME now, on every instance",
    "deactivate": "deactivate a user created at first sign-in, and end their sessions (SCIM users: Entra decides)",
    "reactivate": "reactivate a user created at first sign-in",
}


def add_admin_actions(sub) -> None:
    for name, help_text in ACTIONS.items():
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("user_name", metavar="USERNAME", help="the userName, case-insensitively")


def run(args) -> int:
    import transaction

    from ..cli import bootstrap_app
    from ..db import get_tm_session
    from ..serve import close
    from . import actions

    registry = bootstrap_app(args.config_uri)
    manager = transaction.TransactionManager(explicit=True)
    try:
        with manager:
            dbsession = get_tm_session(registry.dbsession_factory, manager)
            actor = actions.Actor(dbsession, registry, "cli", "cli")
            user = actions.find_user(dbsession, args.user_name)
            message = _apply(args.users_command, actor, user)
        print(message)
        return 0
    except actions.ActionRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        close(SimpleNamespace(registry=registry))


def _apply(command: str, actor, user) -> str:
    from . import actions

    name = user.user_name
    if command == "grant-admin":
        actions.grant_admin(actor, user)
        return f"{name} is now an admin (granted by cli; group syncs keep it; revoke with users revoke-admin)."
    if command == "revoke-admin":
        still = actions.revoke_admin(actor, user)
        if still:
            return f"Grant revoked, but {name} is still an admin as {' and '.join(still)}."
        return f"{name} is no longer an admin; their open sessions lose the console at their next request."
    if command == "sign-out":
        ended = actions.sign_out_everywhere(actor, user)
        return f"Ended {ended} session(s) of {name}."
    if command == "deactivate":
        ended = actions.deactivate(actor, user)
        return f"{name} is deactivated; ended {ended} session(s)."
    actions.reactivate(actor, user)
    return f"{name} is active again."
