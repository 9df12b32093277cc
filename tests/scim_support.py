"""SCIM test support: fixtures for tokens, clients and live servers (owned by the SCIM work).

The client and tokens are the kit's (:mod:`gateway.testing.scim`); their
names stay importable from here.

- ``scim_app`` / ``scim``: the app with ``sqlstore`` enabled on ``database_url``
  (so SQLite, then PostgreSQL) and a :class:`ScimClient` holding a real token.
- ``make_token(app, name)``: a token stored the way ``gateway token create`` does.
- ``live_gateway(database_url, **settings)``: a ``pserve`` subprocess on a free
  port, after ``gateway INI migrate``, for concurrency and conformance tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.testing.ini import logging_sections
from gateway.testing.scim import ENTERPRISE, PATCH_OP, SCIM, SCIM_JSON, ScimClient, make_token  # noqa: F401

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def scim_settings(database_url):
    return {"sqlalchemy.url": database_url, "gateway.plugins": "entra sqlstore"}


@pytest.fixture
def scim_app(make_app, scim_settings):
    return make_app(**scim_settings)


@pytest.fixture
def scim(scim_app):
    return ScimClient(scim_app, make_token(scim_app))


# ---------------------------------------------------------------- live servers


def write_ini(path: Path, database_url: str, port: int, server: dict | None = None, **settings) -> Path:
    from conftest import SESSION_SECRET

    lines = [
        "[app:main]",
        "use = egg:entra-identity-gateway",
        f"gateway.base_url = http://127.0.0.1:{port}",
        # The development IdP supplies SAML metadata, so the server needs no
        # tenant; its keys go under the ini's folder (pserve runs there).
        f"gateway.plugins = {settings.pop('gateway.plugins', 'entra devidp sqlstore')}",
        "saml.idp_profile = devidp",
        f"sqlalchemy.url = {database_url.replace('%', '%%')}",
        f"session.secret = {SESSION_SECRET}",
        "session.cookie_secure = false",
        *(f"{k} = {v}" for k, v in settings.items()),
        "",
        "[server:main]",
        "use = egg:entra-identity-gateway#granian",
        f"listen = 127.0.0.1:{port}",
        *(f"{k} = {v}" for k, v in (server or {}).items()),
        "",
        *logging_sections().splitlines(),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(ini: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(VENV_BIN / "gateway"), str(ini), *args], capture_output=True, text=True, timeout=60, cwd=ini.parent
    )
    if check and result.returncode != 0:
        raise AssertionError(f"gateway {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


class LiveGateway:
    def __init__(self, ini: Path, port: int, process: subprocess.Popen):
        self.ini = ini
        self.port = port
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.scim_url = self.url + SCIM

    def token(self, name: str = "entra") -> str:
        out = run_cli(self.ini, "token", "create", name).stdout
        return next(line.strip() for line in out.splitlines() if line.strip().startswith("gws_"))


@pytest.fixture
def live_gateway(tmp_path, pserve):
    """``live_gateway(database_url, server=None, env=None, **settings)``: a
    migrated database served by pserve (``server``: extra ``[server:main]``
    lines; ``env``: extra environment variables for pserve)."""
    from conftest import free_port

    def start(database_url: str, server: dict | None = None, env: dict | None = None, **settings) -> LiveGateway:
        port = free_port()
        ini = write_ini(tmp_path / f"gateway-{port}.ini", database_url, port, server=server, **settings)
        served = pserve(ini, port, env=env)
        return LiveGateway(ini, port, served.process)

    return start


def http(method: str, url: str, token: str, body=None, timeout: float = 30):
    """A small stdlib HTTP client for live-server tests: (status, json or None); no token, no Authorization."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", SCIM_JSON)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, (json.loads(raw) if raw else None)
