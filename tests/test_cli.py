"""The ``gateway`` command, run as a subprocess as a deployer runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

from saml_support import write_test_metadata

GATEWAY = str(Path(sys.executable).parent / "gateway")


def write_ini(path, database_url, **extra):
    lines = [
        "[app:main]",
        "use = egg:entra-identity-gateway",
        "gateway.base_url = http://127.0.0.1:6543",
        "gateway.plugins = entra",
        f"sqlalchemy.url = {database_url.replace('%', '%%')}",
        "session.secret = test-secret-test-secret-test-secret-0123456789",
        "session.cookie_secure = false",
        # The SAML SP needs IdP metadata to start; a throwaway file will do here.
        *([] if "saml.idp_metadata" in extra else [f"saml.idp_metadata = {write_test_metadata(path.parent)}"]),
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(*args):
    return subprocess.run([GATEWAY, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def fresh_sqlite(tmp_path):
    return f"sqlite:///{tmp_path}/db/gateway.sqlite"


def test_migrate_then_check(tmp_path, fresh_sqlite):
    ini = write_ini(tmp_path / "gw.ini", fresh_sqlite)
    result = run(ini, "check")
    assert result.returncode == 1
    assert "FAIL database: database schema at nothing" in result.stdout

    result = run(ini, "migrate")
    assert result.returncode == 0, result.stderr
    assert "upgraded from nothing to" in result.stdout
    assert "already at" in run(ini, "migrate").stdout

    result = run(ini, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   database" in result.stdout


@pytest.mark.postgres
def test_migrate_and_check_on_postgresql(tmp_path, postgres_url):
    # postgres_url is an already-migrated schema: migrate is a no-op and check passes.
    ini = write_ini(tmp_path / "gw.ini", postgres_url)
    assert "already at" in run(ini, "migrate").stdout
    result = run(ini, "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_a_mistyped_key(tmp_path, fresh_sqlite):
    ini = write_ini(tmp_path / "gw.ini", fresh_sqlite, **{"saml.clock_skw": "10"})
    result = run(ini, "check")
    assert result.returncode == 1
    assert 'saml.clock_skw: unknown setting (did you mean "saml.clock_skew"?)' in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_migrate_refuses_bad_settings_in_one_line(tmp_path, fresh_sqlite):
    ini = write_ini(tmp_path / "gw.ini", fresh_sqlite, **{"session.max_age": "forever"})
    result = run(ini, "migrate")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'error: session.max_age: expected a whole number of seconds between 60 and 2592000, got "forever"'
    ]


def test_unreachable_database_fails_check(tmp_path):
    ini = write_ini(tmp_path / "gw.ini", "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    result = run(ini, "check")
    assert result.returncode == 1
    assert "FAIL database: database unreachable" in result.stdout


def test_missing_config_file(tmp_path):
    result = run(str(tmp_path / "nope.ini"), "check")
    assert result.returncode == 1
    assert "no such configuration file" in result.stdout + result.stderr


def test_development_ini_checks_clean_after_migrate(tmp_path):
    # development.ini keeps its database under %(here)s/var: use a copy in tmp_path.
    root = Path(__file__).parent.parent
    ini = tmp_path / "development.ini"
    ini.write_text((root / "development.ini").read_text())
    assert run(str(ini), "migrate").returncode == 0
    result = run(str(ini), "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_key_set_twice_is_one_line(tmp_path, sqlite_url):
    ini = write_ini(tmp_path / "gw.ini", sqlite_url, **{"session.cookie_secure": "true"})
    result = run(ini, "migrate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: While reading from '{ini}' [line 9]: option 'session.cookie_secure' in section 'app:main' already exists"
    )


def test_check_says_what_a_deployer_still_has_to_fix(tmp_path, fresh_sqlite):
    def with_scim(path, **extra):
        ini = write_ini(path, fresh_sqlite, **extra)
        Path(ini).write_text(
            Path(ini).read_text().replace("gateway.plugins = entra\n", "gateway.plugins = entra sqlstore\n")
        )
        return ini

    ini = with_scim(tmp_path / "gw.ini")
    assert run(ini, "migrate").returncode == 0
    result = run(ini, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert any("WARN deployment: gateway.base_url is http://127.0.0.1:6543" in w for w in warnings), warnings
    assert any("WARN deployment: session.cookie_secure is false" in w for w in warnings), warnings
    assert any("WARN deployment: no admin configured" in w for w in warnings), warnings
    assert any(w.startswith("WARN scim: no SCIM token") for w in warnings), warnings

    ini = with_scim(tmp_path / "gw2.ini", **{"gateway.admin_users": "first@example.com"})
    assert "no admin configured" not in run(ini, "check").stdout
