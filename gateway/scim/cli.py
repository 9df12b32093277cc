"""``gateway CONFIG token create|list|revoke``: SCIM bearer tokens from the shell.

Works on the database the ini names, without building the app, so it runs
while the service is down too. Revocation is read by every instance on the
next request; nothing needs restarting.
"""

from __future__ import annotations

import sys

from sqlalchemy.orm import Session

from . import tokens


def add_token_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="make a token and print it once (only its hash is stored)")
    create.add_argument(
        "name",
        metavar="NAME",
        help="a label such as entra or entra-2025 (rotation: make a new one, then revoke the old)",
    )
    sub.add_parser("list", help="show every token: name, created, last used, revoked")
    revoke = sub.add_parser("revoke", help="refuse a token from the next request on, on every instance")
    revoke.add_argument("name", metavar="NAME")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def cmd_token(args) -> int:
    from .. import audit
    from ..cli import load_raw_settings
    from ..db import create_engine
    from ..settings import parse_settings

    settings = parse_settings(load_raw_settings(args.config_uri))
    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            if args.token_command == "create":
                token = tokens.create_token(session, args.name)
                audit.record(
                    session,
                    actor="cli",
                    action="scim.token.create",
                    target_type="token",
                    target_name=args.name,
                    source="cli",
                )
                print(f'Token "{args.name}" created. Copy it now: it is not stored and cannot be shown again.')
                print(token)
            elif args.token_command == "revoke":
                revoked = tokens.revoke_token(session, args.name)
                audit.record(
                    session,
                    actor="cli",
                    action="scim.token.revoke",
                    target_type="token",
                    target_name=args.name,
                    source="cli",
                )
                print(f'Token "{revoked.name}" revoked at {_when(revoked.revoked_at)}.')
            else:
                rows = tokens.list_tokens(session)
                if not rows:
                    print("no tokens; make one with: gateway CONFIG token create NAME")
                    return 0
                width = max(4, *(len(t.name) for t in rows))
                print(f"{'name':<{width}}  {'created':<23}  {'last used':<23}  revoked")
                for t in rows:
                    print(
                        f"{t.name:<{width}}  {_when(t.created_at):<23}  {_when(t.last_used_at):<23}  {_when(t.revoked_at)}"
                    )
    except tokens.TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0
