"""The production path, run as docs/production.md tells a deployer to run it.

The shipped ``production.ini`` itself (never a copy) with its variables set:
``gateway production.ini migrate`` and ``check``, ``pserve production.ini``
with its default workers on PostgreSQL, and a person's whole sign-in and
sign-out in Chromium through nginx terminating TLS in front of it, so that
every redirect is checked against ``gateway.base_url``. Then each variable
missing in turn, and a secret given through ``..._FILE``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import free_port, server_environment, stop, wait_for_http
from live_idp import LiveIdp
from saml_support import make_keypair

ROOT = Path(__file__).parent.parent
PRODUCTION_INI = str(ROOT / "production.ini")
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
VARIABLES = ("GATEWAY_BASE_URL", "GATEWAY_DATABASE_URL", "GATEWAY_IDP_METADATA", "GATEWAY_SESSION_SECRET")


def run(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def clean_environment() -> dict:
    """A server's environment (conftest.server_environment) without any GATEWAY_* variable (CI may set its own)."""
    return {k: v for k, v in server_environment().items() if not k.startswith("GATEWAY_")}


@pytest.fixture
def fresh_schema(postgres_server_url):
    """An empty PostgreSQL schema (not migrated: `gateway migrate` must create it)."""
    schema = f"gw_prod_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_server_url else "?"
    yield f"{postgres_server_url}{separator}options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def deployment(tmp_path, fresh_schema, idp):
    """The four documented variables (the secret through a file), a live IdP, free ports."""
    tls_port, gateway_port = free_port(), free_port()
    base_url = f"https://auth.example.test:{tls_port}"
    secret = secrets.token_urlsafe(48)
    secret_file = tmp_path / "session_secret"
    secret_file.write_text(secret + "\n")
    with LiveIdp(idp, base_url) as live_idp:
        env = {
            **clean_environment(),
            "GATEWAY_BASE_URL": base_url,
            "GATEWAY_DATABASE_URL": fresh_schema,
            "GATEWAY_IDP_METADATA": live_idp.write_metadata(),
            "GATEWAY_SESSION_SECRET_FILE": str(secret_file),
            "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
        }
        yield {
            "env": env,
            "secret": secret,
            "base_url": base_url,
            "tls_port": tls_port,
            "gateway": f"http://127.0.0.1:{gateway_port}",
            "idp": live_idp,
            "tmp": tmp_path,
        }


NGINX_TLS = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        server_name auth.example.test;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{gateway_port};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


@pytest.fixture
def tls_proxy(deployment):
    """nginx terminating TLS (a throwaway certificate) in front of the gateway's plain-http port."""
    if NGINX is None:
        pytest.skip("nginx is not installed and ./dev test could not install it")
    tmp = deployment["tmp"]
    keys = make_keypair(tmp, "tls", common_name="auth.example.test")
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_TLS.format(
            user="user root;" if os.geteuid() == 0 else "",
            tmp=tmp,
            cert=keys.cert_file,
            key=keys.key_file,
            tls_port=deployment["tls_port"],
            gateway_port=deployment["gateway"].rsplit(":", 1)[1],
        )
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield nginx
    stop(nginx)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.browser
def test_production_ini_as_documented(deployment, tls_proxy):
    env, tmp, base_url = deployment["env"], deployment["tmp"], deployment["base_url"]

    result = run(PRODUCTION_INI, "migrate", env=env, cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "upgraded from nothing to" in result.stdout
    assert result.stderr.strip() == "", result.stderr  # no third-party warnings either

    result = run(PRODUCTION_INI, "check", env=env, cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   settings" in result.stdout and "ok   database" in result.stdout
    assert "ok   idp_metadata" in result.stdout
    # What a deployer still has to do, line by line: here, a SCIM token for Entra.
    assert re.search(r"^WARN scim: no SCIM token.*token create", result.stdout, re.M), result.stdout
    assert deployment["secret"] not in result.stdout + result.stderr

    log_path = tmp / "pserve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "pserve"), PRODUCTION_INI],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**env, "PYTHONWARNINGS": "always::DeprecationWarning"},
        )
    try:
        wait_for_http(deployment["gateway"] + "/healthz", server, log_path)
        with urllib.request.urlopen(deployment["gateway"] + "/saml/metadata") as response:
            metadata = response.read().decode()
        assert f'entityID="{base_url}/saml/metadata"' in metadata
        assert f'Location="{base_url}/saml/acs"' in metadata
        with urllib.request.urlopen(deployment["gateway"] + "/readyz") as response:
            assert response.status == 200
        # Entra provisions Alice with the token the deployer pasted into it
        # (production.ini's provisioning.mode is scim: nobody else signs in).
        token = run(PRODUCTION_INI, "token", "create", "entra", env=env, cwd=tmp)
        assert token.returncode == 0, token.stdout + token.stderr
        provision(deployment["gateway"], token.stdout.strip().split()[-1], "alice@example.com")
        result = run(PRODUCTION_INI, "check", env=env, cwd=tmp)
        assert result.returncode == 0 and "WARN scim" not in result.stdout, result.stdout

        # production.ini's default: one worker process per CPU, at least two.
        # Spawned, not forked (Granian's master runs a watcher thread per worker while it
        # starts the next); multiprocessing's resource tracker is the master's other child.
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        workers = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == max(2, len(os.sched_getaffinity(0))), children
        assert all(
            b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in set(children) - set(workers)
        )

        sign_in_and_out_in_chromium(deployment)
    finally:
        stop(server)
    output = log_path.read_text()
    assert "Traceback" not in output, output
    assert deployment["secret"] not in output
    # Python 3.12+ warns when a process with threads forks (CI runs this on 3.13 too).
    assert "may lead to deadlocks" not in output, output


def provision(gateway: str, token: str, user_name: str) -> None:
    body = json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "active": True,
            "displayName": "Alice Example",
            "emails": [{"value": user_name, "type": "work", "primary": True}],
        }
    ).encode()
    request = urllib.request.Request(
        gateway + "/scim/v2/Users",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 201


def sign_in_and_out_in_chromium(deployment) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM}: `./dev test` installs it")
    from playwright.sync_api import sync_playwright

    from test_browser_signin import CHROMIUM_ARGS

    base_url, idp_url = deployment["base_url"], deployment["idp"].url
    redirects: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_ARGS,
                "--host-resolver-rules=MAP auth.example.test 127.0.0.1",
                "--ignore-certificate-errors",
            ],
        )
        try:
            page = browser.new_page()
            page.on("response", lambda r: redirects.append(r.headers["location"]) if "location" in r.headers else None)
            page.goto(base_url + "/")
            page.click("#sign-in")
            page.wait_for_selector("text=Test IdP: pick a person")
            page.click('button[data-user="alice@example.com"]')
            try:
                page.wait_for_url(base_url + "/", timeout=10000)
            except Exception:
                raise AssertionError(f"{page.url} {redirects}\n{page.content()[:3000]}") from None
            assert page.inner_text("#display-name") == "Alice Example"
            cookie = {c["name"]: c for c in page.context.cookies()}["gateway_session"]
            assert cookie["secure"] and cookie["httpOnly"]

            page.click("#sign-out")
            page.wait_for_selector("#sign-in")
            assert page.url == base_url + "/"
            assert "You are not signed in" in page.content()
        finally:
            browser.close()
    # Every redirect the gateway sent (after sign-in, sign-out, single logout)
    # is on its https base URL, or at the IdP: never the proxy hop's http.
    assert redirects, "no redirect seen"
    for location in redirects:
        assert location.startswith((base_url + "/", idp_url + "/")), redirects


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("missing", VARIABLES)
def test_each_variable_missing_stops_everything_with_one_line(deployment, missing):
    env = {k: v for k, v in deployment["env"].items() if not k.startswith(missing)}
    for command in ("migrate", "check"):
        result = run(PRODUCTION_INI, command, env=env, cwd=deployment["tmp"])
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if missing in line]
        assert len(lines) == 1 and "is not set" in lines[0], (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr

    result = subprocess.run(
        [str(BIN / "pserve"), PRODUCTION_INI],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=deployment["tmp"],
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"environment variable {missing} is not set" in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_secret_from_the_environment_and_from_a_file(deployment):
    env, tmp = deployment["env"], deployment["tmp"]
    assert run(PRODUCTION_INI, "migrate", env=env, cwd=tmp).returncode == 0

    # The same secret straight from the environment works too.
    plain = {k: v for k, v in env.items() if k != "GATEWAY_SESSION_SECRET_FILE"}
    plain["GATEWAY_SESSION_SECRET"] = deployment["secret"]
    assert run(PRODUCTION_INI, "check", env=plain, cwd=tmp).returncode == 0

    # Both at once is ambiguous: refused, naming both, showing neither value.
    both = {**env, "GATEWAY_SESSION_SECRET": deployment["secret"]}
    result = run(PRODUCTION_INI, "check", env=both, cwd=tmp)
    assert result.returncode == 1
    assert "both GATEWAY_SESSION_SECRET and GATEWAY_SESSION_SECRET_FILE are set" in result.stdout
    assert deployment["secret"] not in result.stdout + result.stderr

    # A short secret from a file is refused by length, never shown.
    short = tmp / "short_secret"
    short.write_text("too-short-but-secret")
    result = run(PRODUCTION_INI, "check", env={**env, "GATEWAY_SESSION_SECRET_FILE": str(short)}, cwd=tmp)
    assert result.returncode == 1
    assert 'session.secret: expected a random secret of at least 32 characters, got "20 characters"' in result.stdout
    assert "too-short-but-secret" not in result.stdout + result.stderr

    # An unreadable file names the variable and the path.
    result = run(PRODUCTION_INI, "check", env={**env, "GATEWAY_SESSION_SECRET_FILE": str(tmp / "nope")}, cwd=tmp)
    assert result.returncode == 1
    assert f"session.secret: GATEWAY_SESSION_SECRET_FILE names {tmp / 'nope'}, which cannot be read" in result.stdout

    # The database password in a bad URL is never printed either.
    bad = {**env, "GATEWAY_DATABASE_URL": "mysql://gateway:hunter2-password@db/gateway"}
    result = run(PRODUCTION_INI, "check", env=bad, cwd=tmp)
    assert result.returncode == 1 and "sqlalchemy.url" in result.stdout
    assert "hunter2-password" not in result.stdout + result.stderr


def test_the_installed_dependencies_import_without_warnings():
    """No third-party warning reaches a deployer (pkg_resources' removal notice was one on Python 3.13)."""
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::UserWarning",
            "-c",
            "import pyramid.path, pyramid.paster, gateway.cli, gateway.serve, saml2.sigver",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_kits_logging_sections_are_production_inis():
    """Tests and benchmarks that log "as production.ini does" write these sections."""
    from gateway.testing.ini import logging_sections

    text = (ROOT / "production.ini").read_text()
    assert text[text.index("[loggers]") :].strip() == logging_sections(gateway_level="INFO").strip()
