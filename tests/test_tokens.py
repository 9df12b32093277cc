"""``gateway INI token create|list|revoke``, run as the deployer runs it: a subprocess."""

from __future__ import annotations

import hashlib
import re

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import status_from_another_process
from gateway.db import create_engine
from gateway.db.models import AuditEvent, ScimToken
from scim_support import run_cli, write_ini

pytestmark = pytest.mark.slow


@pytest.fixture
def ini(tmp_path, database_url):
    return write_ini(tmp_path / "gateway.ini", database_url, 6543)


def test_create_list_revoke(ini, make_app, database_url):
    created = run_cli(ini, "token", "create", "entra")
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"gws_[A-Za-z0-9_\-]{43}", token)
    assert "cannot be shown again" in created.stdout

    engine = create_engine(database_url)
    with Session(engine) as session:
        row = session.scalars(sa.select(ScimToken)).one()
        # Only the SHA-256 is stored; the token itself appears nowhere.
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str([row.name, row.token_hash])

    # Used by a running app, then revoked from the shell: refused on the next request.
    app = make_app(**{"sqlalchemy.url": database_url, "gateway.plugins": "entra sqlstore"})
    auth = {"Authorization": f"Bearer {token}"}
    app.get("/scim/v2/Users", headers=auth, status=200)
    listed = run_cli(ini, "token", "list").stdout
    assert re.search(r"^entra\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s+\d{4}-\d\d-\d\d .*UTC\s+-$", listed, re.M), listed

    assert "revoked" in run_cli(ini, "token", "revoke", "entra").stdout
    status_from_another_process(app, "/scim/v2/Users", 401, headers=auth)
    assert re.search(r"^entra\s.*UTC\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", run_cli(ini, "token", "list").stdout, re.M)

    with Session(engine) as session:
        actions = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["scim.token.create", "scim.token.revoke"]
    engine.dispose()


def test_errors_are_one_line_and_exit_1(tmp_path, sqlite_url):
    ini = write_ini(tmp_path / "errors.ini", sqlite_url, 6543)
    run_cli(ini, "token", "create", "entra")
    again = run_cli(ini, "token", "create", "entra", check=False)
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = run_cli(ini, "token", "create", "no spaces", check=False)
    assert bad.returncode == 1 and "bad token name" in bad.stderr
    missing = run_cli(ini, "token", "revoke", "nobody", check=False)
    assert missing.returncode == 1 and 'no token named "nobody"' in missing.stderr
    assert "no tokens" not in run_cli(ini, "token", "list").stdout
