"""Deactivation and deletion over SCIM end live sessions at the very next request.

The proof the issue asks for: a person signs in with a real signed SAML
response, Entra deactivates them over SCIM (``"value": "False"``, as Entra
sends it without ``aadOptscim062020``), and the next ``/whoami`` with their
cookie is refused; on SQLite and on PostgreSQL (``database_url``).
Reactivation lets them sign in again, but no old session comes back.
"""

from __future__ import annotations

import pytest

from conftest import status_from_another_process
from saml_support import post_response, sign_in, start_login
from scim_support import ScimClient, make_token

OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"


def session_cookie(app) -> str:
    return app.cookies["gateway_session"]


@pytest.fixture
def gateway(make_app, scim_settings):
    app = make_app(**scim_settings, **{"provisioning.mode": "scim"})
    return app, ScimClient(app, make_token(app))


def active(value: str) -> dict:
    return {"op": "Replace", "path": "active", "value": value}


def test_deactivation_refuses_the_next_request_and_reactivation_needs_a_new_sign_in(gateway, idp):
    app, scim = gateway
    user = scim.create_user("alice@example.com")
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    assert app.get("/whoami").json["id"] == user["id"]
    app.get("/auth", status=200)
    old = session_cookie(app)

    scim.patch_ops(f"/Users/{user['id']}", active("False"))
    app.get("/whoami", status=401)
    app.get("/auth", status=401)
    assert "You are not signed in" in app.get("/").text

    # Signing in while deactivated is refused.
    response = post_response(app, idp.response(start_login(app), name_id="alice@example.com"), status=403)
    assert "deactivated" in response.text

    scim.patch_ops(f"/Users/{user['id']}", active("True"))
    app.set_cookie("gateway_session", old)
    app.get("/whoami", status=401)  # the old session stays ended

    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    assert app.get("/whoami").json["id"] == user["id"]
    assert session_cookie(app) != old


def test_deletion_refuses_the_next_request_and_the_person_is_no_longer_assigned(gateway, idp):
    app, scim = gateway
    user = scim.create_user("alice@example.com")
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    app.get("/whoami", status=200)

    scim.delete(f"/Users/{user['id']}")
    app.get("/whoami", status=401)
    app.get("/auth", status=401)
    response = post_response(app, idp.response(start_login(app), name_id="alice@example.com"), status=403)
    assert "not assigned" in response.text


def test_deactivation_reaches_a_session_on_another_instance(make_app, scim_settings, idp):
    # Two gateway processes on one database: SCIM hits one, the browser the other.
    browser_side = make_app(**scim_settings, **{"provisioning.mode": "scim"})
    scim_side = make_app(**scim_settings, **{"provisioning.mode": "scim"})
    scim = ScimClient(scim_side, make_token(scim_side))
    user = scim.create_user("alice@example.com")
    sign_in(browser_side, idp, attributes=idp.claims("alice@example.com", oid=OID))
    browser_side.get("/auth", status=200)  # warms that instance's identity cache
    scim.patch_ops(f"/Users/{user['id']}", active("False"))
    # SQLite: seen at the next request. PostgreSQL: within milliseconds (NOTIFY).
    status_from_another_process(browser_side, "/auth", 401)
    browser_side.get("/whoami", status=401)
