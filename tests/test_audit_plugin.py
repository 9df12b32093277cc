"""The shipped ``audit`` plugin: lifecycle events become audit rows, SCIM writes are not doubled."""

from __future__ import annotations

import sqlalchemy as sa

from gateway.db.models import AuditEvent
from gateway.provisioning.policy import NOT_ASSIGNED
from saml_support import post_response, sign_in, start_login
from scim_support import ScimClient, make_token

OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"


def audit_rows(app):
    with app.app.registry.dbsession_factory() as db:
        return db.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()


def test_sign_in_update_sign_out_and_denial_are_recorded(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra audit"})
    xml = idp.response(start_login(app), attributes=idp.claims("alice@example.com", oid=OID))
    response = post_response(app, xml, status=303, headers={"X-Request-Id": "corr-signin-1"})
    assert response.headers["X-Request-Id"] == "corr-signin-1"
    claims = idp.claims("alice@example.com", oid=OID)
    claims["jobtitle"] = ["Engineer"]
    sign_in(app, idp, attributes=claims)
    app.get("/").forms[0].submit(status=303)

    rows = audit_rows(app)
    assert [(r.action, r.actor, r.source, r.target_name) for r in rows] == [
        ("user.created", "user:alice@example.com", "saml", "alice@example.com"),
        ("user.signed_in", "user:alice@example.com", "saml", "alice@example.com"),
        ("user.updated", "user:alice@example.com", "saml", "alice@example.com"),
        ("user.signed_in", "user:alice@example.com", "saml", "alice@example.com"),
        ("user.signed_out", "user:alice@example.com", "saml", "alice@example.com"),
    ]
    assert rows[0].correlation_id == rows[1].correlation_id == "corr-signin-1"
    assert rows[2].details == {"changed": ["title"]}
    assert len({r.target_id for r in rows}) == 1 and rows[0].target_id


def test_a_refused_sign_in_is_recorded_with_its_reason(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra audit", "provisioning.mode": "scim"})
    post_response(app, idp.response(start_login(app)), status=403)
    (row,) = audit_rows(app)
    assert (row.action, row.target_id, row.target_name, row.source) == (
        "user.denied",
        None,
        "alice@example.com",
        "saml",
    )
    assert row.details == {"reason": NOT_ASSIGNED}


def test_without_the_plugin_sign_ins_leave_no_rows(make_app, idp):
    app = make_app()
    sign_in(app, idp)
    assert audit_rows(app) == []


def test_scim_writes_are_recorded_once(make_app, scim_settings):
    # The SCIM service records its writes itself; the plugin must not add a second row.
    app = make_app(**{**scim_settings, "gateway.plugins": "entra sqlstore audit"})
    scim = ScimClient(app, make_token(app, "entra-prod"))
    uid = scim.create_user("bob@example.com")["id"]
    scim.patch_ops(f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    scim.delete(f"/Users/{uid}")
    rows = audit_rows(app)
    assert [(r.action, r.actor) for r in rows] == [
        ("scim.user.create", "scim:entra-prod"),
        ("scim.user.patch", "scim:entra-prod"),
        ("scim.user.delete", "scim:entra-prod"),
    ]
