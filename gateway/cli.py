"""The ``gateway`` admin command: ``gateway CONFIG_URI COMMAND ...``.

Each command is a function taking the parsed arguments and returning an exit
status. Commands that need the app build it from the ini exactly as ``pserve``
does, so the CLI sees the same settings, plugins and database.
"""

from __future__ import annotations

import argparse
import configparser
import sys
from collections.abc import Callable

from .errors import ConfigError


def load_raw_settings(config_uri: str) -> dict:
    """The ``[app:main]`` settings, ``${NAME}`` references expanded."""
    from pyramid.paster import get_appsettings, setup_logging

    from .settings import expand_environment

    try:
        setup_logging(config_uri)
        return expand_environment(get_appsettings(config_uri))
    except FileNotFoundError:
        raise ConfigError(f"{config_uri}: no such configuration file") from None
    except LookupError as exc:
        raise ConfigError(f"{config_uri}: {exc}") from None
    except configparser.Error as exc:
        # A malformed ini (a key set twice, a line outside any section): one line, not a traceback.
        raise ConfigError(" ".join(exc.message.split())) from None


def bootstrap_app(config_uri: str):
    """The app's registry, built exactly as ``pserve`` builds it."""
    from pyramid.paster import bootstrap

    load_raw_settings(config_uri)
    try:
        env = bootstrap(config_uri)
    except SystemExit as exc:
        # The app factory's exit for pserve (gateway.paste_app): the CLI says it its own way.
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise
    env["closer"]()
    return env["registry"]


def cmd_migrate(args) -> int:
    from .db import create_engine, migrate
    from .settings import parse_settings

    settings = parse_settings(load_raw_settings(args.config_uri))
    engine = create_engine(settings.database_url)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    engine.dispose()
    if before == after:
        print(f"database schema already at {after}")
    else:
        print(f"database schema upgraded from {before or 'nothing'} to {after}")
    return 0


def cmd_check(args) -> int:
    """Build the app like pserve, then run every readiness and warning check."""
    from pyramid.request import Request

    try:
        registry = bootstrap_app(args.config_uri)
    except ConfigError as exc:
        print(f"FAIL settings: {exc}")
        return 1
    print(f"ok   settings: {args.config_uri} is valid")
    names = [n for n in registry.gateway_settings.gateway.plugins]
    print(f"ok   plugins: {', '.join(names) if names else 'none enabled'}")

    request = Request.blank("/")
    request.registry = registry
    # A command, not a request: it reads the metadata source now (waiting at
    # most saml.metadata_timeout), so its line says whether the source works.
    provider = getattr(registry, "saml_sp", None)
    if provider is not None:
        provider.store.refresh_now()
    failed = False
    for name, check in registry.readiness_checks.items():
        reason = check(request)
        if reason:
            failed = True
            print(f"FAIL {name}: {reason}")
        else:
            print(f"ok   {name}")
    for name, check in registry.warning_checks.items():
        try:
            warnings = check(request) or ()
        except Exception as exc:  # noqa: BLE001 - the FAIL lines above already say what is down
            warnings = [f"not checked ({exc.__class__.__name__})"]
        for warning in warnings:
            print(f"WARN {name}: {warning}")
    registry.db_engine.dispose()
    return 1 if failed else 0


def cmd_token(args) -> int:
    from .scim.cli import cmd_token as run

    return run(args)


def _token_arguments(parser) -> None:
    from .scim.cli import add_token_arguments

    add_token_arguments(parser)


def cmd_users(args) -> int:
    from .provisioning.cli import cmd_users as run

    return run(args)


def _users_arguments(parser) -> None:
    from .provisioning.cli import add_users_arguments

    add_users_arguments(parser)


def cmd_prune(args) -> int:
    from .retention import cmd_prune as run

    return run(args)


#: name -> (function, help, argument adder). Other modules add their commands here.
COMMANDS: dict[str, tuple[Callable, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "migrate": (cmd_migrate, "create or upgrade the database schema", None),
    "check": (cmd_check, "check settings, plugins, database and IdP metadata", None),
    "token": (cmd_token, "SCIM bearer tokens: token create NAME, token list, token revoke NAME", _token_arguments),
    "users": (
        cmd_users,
        "users list, users show USERNAME; users grant-admin|revoke-admin|sign-out|deactivate|reactivate USERNAME",
        _users_arguments,
    ),
    "prune": (
        cmd_prune,
        "delete expired sign-in traces, provisioning log rows, test sign-ins, sessions and audit events now",
        None,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Administer the identity gateway configured by CONFIG_URI."
    )
    parser.add_argument("config_uri", metavar="CONFIG_URI", help="the ini file, e.g. production.ini")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (func, help_text, add_args) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(func=func)
        if add_args:
            add_args(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
