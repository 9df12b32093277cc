"""``gateway CONFIG users list|show``, run as a subprocess as a deployer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saml_support import post_response, sign_in, start_login
from scim_support import ScimClient, make_token

GATEWAY = str(Path(sys.executable).parent / "gateway")
OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"


def run(ini, *args):
    result = subprocess.run([GATEWAY, ini, *args], capture_output=True, text=True, timeout=60)
    return result


def write_ini(path: Path, database_url: str) -> str:
    path.write_text(
        "\n".join(
            [
                "[app:main]",
                "use = egg:entra-identity-gateway",
                "gateway.base_url = http://127.0.0.1:6543",
                f"sqlalchemy.url = {database_url.replace('%', '%%')}",
                "session.secret = test-secret-test-secret-test-secret-0123456789",
                "session.cookie_secure = false",
            ]
        )
        + "\n"
    )
    return str(path)


@pytest.fixture
def ini(tmp_path, database_url):
    return write_ini(tmp_path / "gw.ini", database_url)


def test_users_list_and_show(make_app, scim_settings, idp, ini):
    app = make_app(
        **{**scim_settings, "gateway.plugins": "entra sqlstore audit", "gateway.admin_groups": '"Gateway Admins"'}
    )
    scim = ScimClient(app, make_token(app, "entra-prod"))
    alice = scim.create_user("alice@example.com", displayName="Alice Smith", title="Engineer")
    scim.create_group("Gateway Admins", members=[alice["id"]])
    scim.create_user("bob@example.com", active=False)
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    app.reset()
    bob_claims = idp.claims("bob@example.com", oid="8b1f2c3d-0000-4000-8000-00000000000b")
    post_response(app, idp.response(start_login(app), name_id="bob@example.com", attributes=bob_claims), status=403)

    listed = run(ini, "users", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["userName", "active", "admin", "provisioned"]
    assert lines[1].split()[:5] == ["alice@example.com", "yes", "yes", "scim", "alice@example.com"]
    assert lines[2].split()[:4] == ["bob@example.com", "no", "no", "scim"]

    shown = run(ini, "users", "show", "ALICE@example.com")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"id           {alice['id']}" in out
    assert f"IdP subject  {OID}" in out
    assert "  display_name Alice Smith" in out and "  title        Engineer" in out
    assert "Groups (1)\n  Gateway Admins" in out
    assert "Sessions (1, newest first, at most 20)\n  state" in out and "\n  open " in out
    audit = out.split("Audit events", 1)[1]
    assert "user.signed_in" in audit and "user:alice@example.com" in audit
    assert "scim.user.create" in audit and "scim:entra-prod" in audit

    bob = run(ini, "users", "show", "bob@example.com").stdout
    assert "active       no" in bob and "user.denied" in bob and "deactivated" in bob


def test_users_on_an_empty_database(tmp_path, sqlite_url):
    ini = write_ini(tmp_path / "gw.ini", sqlite_url)
    result = run(ini, "users", "list")
    assert result.returncode == 0 and "no users yet" in result.stdout
    result = run(ini, "users", "show", "nobody@example.com")
    assert result.returncode == 1
    assert 'no user with userName "nobody@example.com"' in result.stderr
