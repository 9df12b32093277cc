"""SCIM test support: fixtures for tokens, clients and live servers (owned by the SCIM work).

- ``scim_app`` / ``scim``: the app with ``sqlstore`` enabled on ``database_url``
  (so SQLite, then PostgreSQL) and a :class:`ScimClient` holding a real token.
- ``make_token(app, name)``: a token stored the way ``gateway token create`` does.
- ``live_gateway(database_url, **settings)``: a ``pserve`` subprocess on a free
  port, after ``gateway INI migrate``, for concurrency and conformance tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

SCIM = "/scim/v2"
SCIM_JSON = "application/scim+json"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
VENV_BIN = Path(sys.executable).parent


def make_token(app, name: str = "entra") -> str:
    from gateway.scim.tokens import create_token

    with Session(app.app.registry.db_engine) as session, session.begin():
        return create_token(session, name)


class ScimClient:
    """webtest with the bearer token, SCIM content type and the /scim/v2 prefix."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    def headers(self, extra=None):
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path, status=200, headers=None, **params):
        return self.app.get(SCIM + path, params=params or None, headers=self.headers(headers), status=status)

    def _send(self, method, path, body, status, headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return getattr(self.app, method)(
            SCIM + path,
            params=data,
            headers=self.headers(headers),
            content_type=(headers or {}).get("Content-Type", SCIM_JSON),
            status=status,
        )

    def post(self, path, body, status=201, headers=None):
        return self._send("post", path, body, status, headers)

    def put(self, path, body, status=200, headers=None):
        return self._send("put", path, body, status, headers)

    def patch(self, path, body, status=200, headers=None):
        return self._send("patch", path, body, status, headers)

    def delete(self, path, status=204, headers=None):
        return self.app.delete(SCIM + path, headers=self.headers(headers), status=status)

    # conveniences
    def create_user(self, user_name, **attributes):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, **attributes}
        return self.post("/Users", body).json

    def create_group(self, display_name, members=()):
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": display_name,
            "members": [{"value": m} for m in members],
        }
        return self.post("/Groups", body).json

    def patch_ops(self, path, *operations, status=200):
        return self.patch(path, {"schemas": [PATCH_OP], "Operations": list(operations)}, status=status)


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
        "[loggers]",
        "keys = root",
        "[handlers]",
        "keys = console",
        "[formatters]",
        "keys = generic",
        "[logger_root]",
        "level = WARN",
        "handlers = console",
        "[handler_console]",
        "class = StreamHandler",
        "args = (sys.stderr,)",
        "level = NOTSET",
        "formatter = generic",
        "[formatter_generic]",
        "format = %(levelname)s [%(name)s] %(message)s",
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


