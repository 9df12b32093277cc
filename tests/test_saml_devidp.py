"""The development IdP: refused off localhost, and a full sign-in through its pages in-process."""

from __future__ import annotations

import re

import pytest

from gateway import ConfigError


@pytest.fixture
def dev_app(make_app):
    app = make_app(**{"gateway.plugins": "entra devidp", "saml.idp_profile": "devidp", "saml.idp_metadata": None})
    app.extra_environ["REMOTE_ADDR"] = "127.0.0.1"
    return app


def test_only_clients_on_this_machine_reach_it(dev_app):
    for address in ("10.0.0.5", "192.168.1.20", "2001:db8::1", ""):
        environ = {"REMOTE_ADDR": address}
        assert dev_app.get("/devidp/saml2", extra_environ=environ, status=403).content_type == "text/plain"
        dev_app.post("/devidp/signin", {"email": "alice@example.com"}, extra_environ=environ, status=403)
    # A forwarded-for header claiming loopback does not help.
    dev_app.get(
        "/devidp/saml2", headers={"X-Forwarded-For": "127.0.0.1"}, extra_environ={"REMOTE_ADDR": "10.0.0.5"}, status=403
    )
    dev_app.get("/devidp/saml2", extra_environ={"REMOTE_ADDR": "::1"}, status=200)


def test_refused_unless_base_url_is_local(make_app):
    with pytest.raises(ConfigError, match="devidp.*localhost or 127.0.0.1"):
        make_app(
            **{
                "gateway.plugins": "entra devidp",
                "saml.idp_profile": "devidp",
                "gateway.base_url": "https://auth.example.com",
                "session.cookie_secure": "true",
            }
        )


def test_loud_warning_at_start_up(make_app, caplog):
    make_app(**{"gateway.plugins": "entra devidp", "saml.idp_profile": "devidp", "saml.idp_metadata": None})
    assert any("DEVELOPMENT IdP ENABLED" in r.getMessage() for r in caplog.records)


def test_sign_in_through_the_pick_page(dev_app):
    assert "Sign in with the development IdP" in dev_app.get("/").text
    to_idp = dev_app.get("/saml/login", params={"next": "/whoami"}, status=303)
    pick = dev_app.get(to_idp.headers["Location"].replace("http://localhost", ""))
    form = next(f for f in pick.forms.values() if f.fields.get("email", [None])[0].value == "alice@example.com")
    autopost = form.submit()
    acs_form = autopost.forms["post"]
    assert acs_form.action == "http://localhost/saml/acs"
    back = acs_form.submit(status=303)
    assert back.headers["Location"] == "http://localhost/whoami"
    who = dev_app.get("/whoami").json
    assert who["userName"] == "alice@example.com" and who["displayName"] == "Alice Admin"
    # Entra-shaped: the lasting key is the object id, not the email.
    assert re.fullmatch(r"[0-9a-f-]{36}", who["id"])


def test_typed_user(dev_app):
    to_idp = dev_app.get("/saml/login", status=303)
    pick = dev_app.get(to_idp.headers["Location"].replace("http://localhost", ""))
    form = [f for f in pick.forms.values() if "display_name" in f.fields][0]
    form["email"] = "dave@example.org"
    form["display_name"] = "Dave Typed"
    form.submit().forms["post"].submit(status=303)
    assert dev_app.get("/whoami").json["displayName"] == "Dave Typed"


def test_key_is_made_once_and_kept(make_app, tmp_path, sqlite_url):
    first = make_app(**{"gateway.plugins": "entra devidp", "saml.idp_profile": "devidp", "saml.idp_metadata": None})
    second = make_app(**{"gateway.plugins": "entra devidp", "saml.idp_profile": "devidp", "saml.idp_metadata": None})
    assert first.app.registry.devidp.cert_b64 == second.app.registry.devidp.cert_b64
