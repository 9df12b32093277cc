"""gateway.testing, the extension author's kit: cheap to load, usable outside this project's tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

from gateway.testing.saml import GROUPS, MICROSOFT


def test_the_kit_is_a_pytest11_entry_point():
    (found,) = entry_points(group="pytest11", name="gateway.testing")
    assert found.value == "gateway.testing"


def test_loading_the_kit_imports_nothing_heavy():
    # Every pytest run in an environment with the gateway installed loads it.
    heavy = ("pyramid", "sqlalchemy", "saml2", "webtest", "cryptography", "transaction")
    code = f"import sys, gateway.testing; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sign_in_as_a_person_with_groups_and_claims(gateway_app, gateway_sign_in, gateway_events):
    gateway_sign_in("dana@example.com", groups=["g-1", "g-2"], claims={MICROSOFT + "displayname": "Dana D."})
    whoami = gateway_app.get("/whoami").json
    assert whoami["userName"] == "dana@example.com"
    assert whoami["displayName"] == "Dana D."
    assert gateway_events.types() == ["created", "signed_in"]


def test_a_claim_can_be_removed(gateway_app, gateway_sign_in):
    gateway_sign_in("erin@example.com", claims={GROUPS: None})
    assert gateway_app.get("/whoami").json["groups"] == []


def test_scim_client_holds_a_fresh_token(gateway_scim, gateway_events):
    created = gateway_scim.create_user("frank@example.com")
    assert gateway_scim.get(f"/Users/{created['id']}").json["userName"] == "frank@example.com"
    assert gateway_events.types() == ["created"]


def test_an_app_from_an_ini_on_the_test_database(gateway_make_app, gateway_database_url, tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\ngateway.plugins = entra\nsaml.clock_skew = 7\n"
        "sqlalchemy.url = sqlite:///%(here)s/not-this-one.sqlite\n"
    )
    app = gateway_make_app(ini)
    registry = app.app.registry
    assert registry.gateway_settings.saml.clock_skew == 7
    assert str(registry.db_engine.url) == gateway_database_url


def test_a_plugin_package_tests_itself_with_the_kit_alone(tmp_path):
    """Outside this project's tests/ (no conftest): only the installed kit, found through its entry point."""
    (tmp_path / "acme_policy.py").write_text(
        textwrap.dedent("""
        from gateway import hookimpl
        from gateway.interfaces import Decision

        @hookimpl
        def gateway_provisioning_decide(identity, user, source):
            if identity.user_name.startswith("contractor"):
                return Decision.deny("Contractors sign in elsewhere")
    """)
    )
    (tmp_path / "test_acme.py").write_text(
        textwrap.dedent("""
        import pytest
        from gateway.testing.storage import ScimStorageContract

        @pytest.fixture
        def gateway_settings(gateway_settings):
            gateway_settings["gateway.plugins"] += " acme_policy"
            return gateway_settings

        def test_contractors_are_refused(gateway_app, gateway_sign_in, gateway_events):
            response = gateway_sign_in("contractor@example.com", status=403)
            assert "Contractors sign in elsewhere" in response.text
            assert gateway_events.types() == ["denied"]

        def test_staff_sign_in(gateway_app, gateway_sign_in, gateway_scim):
            gateway_sign_in("staff@example.com")
            assert gateway_app.get("/whoami").json["userName"] == "staff@example.com"
            assert gateway_scim.get("/Users").json["totalResults"] == 1

        class TestSqlStoreAgain(ScimStorageContract):
            @pytest.fixture
            def backend_settings(self):
                return {"gateway.plugins": "entra sqlstore", "scim.storage": "sqlstore"}
    """)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-W",
            "ignore::DeprecationWarning",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
