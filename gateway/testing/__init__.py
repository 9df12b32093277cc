"""gateway.testing: the extension author's test kit, a pytest plugin.

Installed with the gateway and registered through the ``pytest11`` entry
point (``-p no:gateway.testing`` turns it off). It is inert until a test asks
for one of its fixtures: importing it loads neither Pyramid, SQLAlchemy nor
pysaml2, and it adds one command-line option and nothing else. Every fixture
name starts with ``gateway_``:

``gateway_database_url``
    a migrated, empty database of the test's own: a copy of a migrated
    SQLite file, or, with ``--gateway-database-url`` (or the environment
    variable ``GATEWAY_TESTING_DATABASE_URL``) naming a PostgreSQL server, a
    migrated schema of this test run's own, emptied after each test.
``gateway_settings``
    the smallest valid settings (a dict the test may change before it builds
    an app): plugins ``entra sqlstore``, the test IdP's metadata, a session
    secret, cookies allowed over http.
``gateway_make_app``
    ``gateway_make_app(ini=None, **settings)``: the gateway as a
    ``webtest.TestApp`` on ``gateway_database_url``, from the settings above,
    an ini's ``[app:main]`` laid over them, then keyword settings (None
    removes a key); released after the test.
``gateway_app``
    ``gateway_make_app()``.
``gateway_idp``
    the test IdP (:class:`gateway.testing.saml.TestIdp`): Entra-shaped,
    with keys made for this run, signing with xmlsec1.
``gateway_idp_server``
    the test IdP on a real port (:class:`gateway.testing.idp_server.IdpServer`),
    for browser tests of a served gateway: set its ``gateway_url`` and
    ``people``, give the gateway its ``write_metadata()``; a browser sent
    to sign in gets a page with a button per person.
``gateway_sign_in``
    ``gateway_sign_in(name="alice@example.com", *, app=None, groups=("Staff",),
    claims=None, oid=None, next_path=None, status=303)``: a real signed
    SP-initiated sign-in as that person in ``app`` (default
    ``gateway_app``), which then holds the session cookie.
``gateway_scim``
    a :class:`gateway.testing.scim.ScimClient` on ``gateway_app`` with a
    fresh token.
``gateway_events``
    an :class:`gateway.testing.events.EventRecorder` attached to
    ``gateway_app``: ``events`` (user events in the transaction),
    ``group_events``, ``committed`` (what ``gateway_event_committed``
    announced), ``types()``, ``committed_types()``.

The storage contract suite is :class:`gateway.testing.storage.ScimStorageContract`.
"""

from __future__ import annotations

import os

import pytest

#: The session secret of apps the kit builds (long enough for the gateway's check).
SESSION_SECRET = "test-secret-test-secret-test-secret-0123456789"
DATABASE_URL_VARIABLE = "GATEWAY_TESTING_DATABASE_URL"


def pytest_addoption(parser):
    group = parser.getgroup("gateway.testing", "identity gateway test kit")
    group.addoption(
        "--gateway-database-url",
        default=None,
        help="PostgreSQL server (SQLAlchemy URL) for the gateway_database_url fixture;"
        f" default ${DATABASE_URL_VARIABLE}, else a temporary SQLite file",
    )


def _server_url(config) -> str | None:
    return config.getoption("gateway_database_url", None) or os.environ.get(DATABASE_URL_VARIABLE) or None


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def gateway_sqlite_template(tmp_path_factory):
    """A migrated SQLite file that each test's database is copied from."""
    from .database import migrated_sqlite

    return migrated_sqlite(tmp_path_factory.mktemp("gateway-sqlite") / "template.sqlite")


@pytest.fixture(scope="session")
def gateway_postgres_schema(request):
    """A migrated PostgreSQL schema for this test process (dropped at the end), or None without a server URL."""
    url = _server_url(request.config)
    if not url:
        yield None
        return
    from .database import PostgresSchema

    schema = PostgresSchema(url)
    yield schema
    schema.drop()


@pytest.fixture
def gateway_database_url(request, tmp_path):
    """A migrated, empty database: SQLite, or PostgreSQL when a server URL is given."""
    if _server_url(request.config):
        schema = request.getfixturevalue("gateway_postgres_schema")
        yield schema.url
        schema.truncate()
        return
    from .database import sqlite_copy

    yield sqlite_copy(request.getfixturevalue("gateway_sqlite_template"), tmp_path / "gateway.sqlite")


# ---------------------------------------------------------------- SAML


@pytest.fixture(scope="session")
def gateway_idp(tmp_path_factory):
    """The test IdP, with a signing key, a rollover key and an attacker's key made for this run."""
    from .saml import TestIdp, make_keypair

    folder = tmp_path_factory.mktemp("gateway-idp")
    return TestIdp(
        folder, make_keypair(folder, "idp"), make_keypair(folder, "idp-rollover"), make_keypair(folder, "attacker")
    )


@pytest.fixture(scope="session")
def gateway_idp_metadata(gateway_idp):
    """The test IdP's metadata file (its path), for ``saml.idp_metadata``."""
    return gateway_idp.write_metadata()


@pytest.fixture
def gateway_idp_server(gateway_idp):
    """The test IdP on a real port (:class:`gateway.testing.idp_server.IdpServer`), closed after the test."""
    from .idp_server import IdpServer

    with IdpServer(gateway_idp) as server:
        yield server


# ---------------------------------------------------------------- the app


@pytest.fixture
def gateway_settings(gateway_idp_metadata):
    return {
        "gateway.base_url": "http://localhost",
        "gateway.plugins": "entra sqlstore",
        "session.secret": SESSION_SECRET,
        "session.cookie_secure": "false",
        "saml.idp_metadata": gateway_idp_metadata,
    }


@pytest.fixture
def gateway_make_app(gateway_settings, gateway_database_url):
    from .app import AppMaker

    maker = AppMaker({"sqlalchemy.url": gateway_database_url, **gateway_settings})
    yield maker
    maker.close()


@pytest.fixture
def gateway_app(gateway_make_app):
    return gateway_make_app()


@pytest.fixture
def gateway_sign_in(gateway_idp, request):
    from .saml import sign_in_as

    def sign_in(name: str = "alice@example.com", *, app=None, **kwargs):
        return sign_in_as(
            app if app is not None else request.getfixturevalue("gateway_app"), gateway_idp, name, **kwargs
        )

    return sign_in


@pytest.fixture
def gateway_scim(gateway_app):
    from .scim import scim_client

    return scim_client(gateway_app)


@pytest.fixture
def gateway_events(gateway_app):
    from .events import EventRecorder

    return EventRecorder().attach(gateway_app)
