"""The fixture chain: database URL, settings, app, webtest client.

The substance lives in the extension author's kit, ``gateway.testing`` (a
pytest plugin the package installs): migrated databases, the app maker, the
test IdP, the SCIM client. The fixtures here give the project's tests their
own defaults on top of it (both databases, only ``entra`` enabled).

Storage-touching tests take ``database_url``, which runs them once on SQLite
and once on PostgreSQL. PostgreSQL tests use one schema per test process
(migrated once with Alembic) and truncate every table after each test;
SQLite tests get a copy of a migrated template file. When PostgreSQL does not
answer the tests skip, unless ``GATEWAY_TEST_REQUIRE_POSTGRES=1`` (CI) turns
that into a failure.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.db import create_engine
from gateway.testing import SESSION_SECRET  # noqa: F401 - imported from here by tests
from gateway.testing.app import AppMaker
from gateway.testing.app import close_app as _close_app
from gateway.testing.database import PostgresSchema, sqlite_copy, truncate_all

# The kit is loaded through its pytest11 entry point; naming it here too keeps
# the suite working where that entry point is missing (same plugin name, so
# never registered twice). Fixtures of each domain live beside this file.
pytest_plugins = ["gateway.testing", "saml_support", "scim_support"]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- other processes


def status_from_another_process(app, url: str, status: int, within: float = 1.0, **kwargs) -> float:
    """Request ``url`` until it answers ``status``; the seconds that took.

    For a change made by another process on PostgreSQL, which this instance
    learns of through ``NOTIFY`` on a listener thread: a request racing that
    thread may still be answered from memory for a few milliseconds. Fails
    after ``within`` seconds.
    """
    started = time.monotonic()
    while True:
        answered = app.get(url, expect_errors=True, **kwargs).status_int
        if answered == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{url} still answers {answered}, not {status}, after {within} s"
        time.sleep(0.002)


# ---------------------------------------------------------------- live servers


def wait_for_http(url: str, process: subprocess.Popen, log_path: Path | None = None, timeout: float = 30.0) -> None:
    """Until ``url`` answers at all (any status, redirects not followed); fail at once if ``process`` exits."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text() if log_path else ""
            raise AssertionError(f"{process.args[0]} exited with {process.returncode}\n{output}")
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        try:
            connection.request("GET", parts.path or "/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            connection.close()
    raise AssertionError(f"{url} did not answer within {timeout}s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)  # pserve gives its workers 10 s (gateway.serve.STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log_path: Path


def pytest_configure(config):
    # An xdist controller never scrapes; its workers must not inherit its metrics
    # directory (gateway/metrics/directory.py), or each scrape would add up all of them.
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def server_environment(extra: dict | None = None) -> dict:
    """The environment for a server this test process starts: never this process's
    metrics directory (gateway/metrics/directory.py), which the server's start would
    empty under the test process's own counters."""
    return {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, **(extra or {})}


@pytest.fixture
def pserve():
    """``pserve(ini, port, env=None)`` migrates the ini's database, serves it, and waits for /healthz.

    The server's output goes to a log beside the ini; every server started is
    stopped after the test.
    """
    started: list[Served] = []

    def start(ini: Path, port: int, env: dict | None = None) -> Served:
        subprocess.run([str(BIN / "gateway"), str(ini), "migrate"], check=True, capture_output=True, timeout=60)
        log_path = ini.with_suffix(".log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(BIN / "pserve"), str(ini)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ini.parent,
                env=server_environment(env),
            )
        served = Served(f"http://127.0.0.1:{port}", process, log_path)
        started.append(served)
        wait_for_http(served.url + "/healthz", process, log_path)
        return served

    yield start
    for served in started:
        stop(served.process)


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def postgres_server_url():
    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        message = f"PostgreSQL at {url} is unreachable: {exc.__class__.__name__}: {exc}".splitlines()[0]
        if os.environ.get("GATEWAY_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (GATEWAY_TEST_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_schema_url(postgres_server_url, worker_id):
    """A migrated schema of its own for this test process, dropped at the end."""
    schema = PostgresSchema(postgres_server_url, f"gw_test_{worker_id}_{uuid.uuid4().hex[:8]}")
    yield schema.url
    schema.drop()


@pytest.fixture(scope="session")
def worker_id(request):
    # pytest-xdist provides its own worker_id fixture; this one covers plain runs.
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def sqlite_template(gateway_sqlite_template):
    return gateway_sqlite_template


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path):
    return sqlite_copy(sqlite_template, tmp_path / "gateway.sqlite")


@pytest.fixture
def postgres_url(postgres_schema_url):
    yield postgres_schema_url
    truncate_all(postgres_schema_url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request):
    """A migrated, empty database: SQLite, then PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------- settings and app


@pytest.fixture
def base_settings():
    """The smallest valid settings (no database yet); tests add or override keys."""
    return {
        "gateway.base_url": "http://localhost",
        "gateway.plugins": "entra",
        "session.secret": SESSION_SECRET,
        "session.cookie_secure": "false",
    }


#: Test modules that run a second time on the SCIM storage backend that keeps
#: its data outside the gateway's tables (plugins/gateway_memstore), on SQLite:
#: the proof that sign-in, deactivation, forward-auth and Entra's SCIM calls
#: work on any backend (gateway/scim/directory.py). Only these: it doubles their time.
BACKEND_MODULES = frozenset(
    {
        "test_scim_entra",
        "test_provisioning",
        "test_provisioning_deactivation",
        "test_provisioning_log",
        "test_provisioning_scim",
        "test_saml_acs",
        "test_forward_auth",
    }
)


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in BACKEND_MODULES and "make_app" in metafunc.fixturenames:
        metafunc.parametrize("scim_backend", ["sqlstore", "memstore"], indirect=True)


def pytest_collection_modifyitems(config, items):
    # memstore's run is one run: SQLite, the in-process SAML backend.
    dropped = [
        item
        for item in items
        if getattr(item, "callspec", None)
        and item.callspec.params.get("scim_backend") == "memstore"
        and (
            item.callspec.params.get("database_url") == "postgresql"
            or item.callspec.params.get("crypto_backend") == "xmlsec1"
        )
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in set(dropped)]


@pytest.fixture
def scim_backend(request):
    """The SCIM storage backend apps are built with: ``sqlstore``, or ``memstore`` (BACKEND_MODULES' second run)."""
    return getattr(request, "param", "sqlstore")


@pytest.fixture
def make_app(base_settings, sqlite_url, scim_backend, request):
    """``make_app(**settings)`` builds the WSGI app and wraps it in webtest.

    Keys use underscores for dots after the first part is split off, so pass
    them as a dict: ``make_app(**{"saml.clock_skew": "10"})``. The database
    defaults to this test's SQLite copy; pass ``sqlalchemy.url`` to change it.
    With ``scim_backend`` memstore, that backend replaces sqlstore (or is added).
    """
    # base_settings is read when an app is built: tests change it before.
    maker = AppMaker({}, storage=None if scim_backend == "sqlstore" else scim_backend)

    def factory(**overrides):
        app = maker(**{"sqlalchemy.url": sqlite_url, **base_settings, **overrides})
        # Closed before the database fixtures' teardown (a finalizer added during the
        # test runs first), so that what an app writes as it closes (the provisioning
        # log's last queued rows) lands before PostgreSQL's truncation, not after it.
        request.node.addfinalizer(maker.close)
        return app

    yield factory
    maker.close()


def close_app(wsgi_app) -> None:
    """Release what an app holds: pools, and the identity cache's listener connection."""
    _close_app(wsgi_app)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules a test writes."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


@pytest.fixture
def app(make_app):
    return make_app()
