"""Provisioning through SCIM writes: SCIM off in first_login mode, the mapped profile
recomputed on every SCIM write (authority and transforms), admins from SCIM groups.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.db.models import User
from gateway.provisioning.policy import SCIM_DISABLED
from saml_support import MICROSOFT, sign_in
from scim_support import ENTERPRISE, ScimClient, make_token

OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"


def user_row(app, user_name="alice@example.com") -> User:
    with app.app.registry.dbsession_factory() as db:
        return db.scalars(sa.select(User).where(User.user_name_key == user_name)).one()


def client(app) -> ScimClient:
    return ScimClient(app, make_token(app))


def test_every_scim_endpoint_answers_403_in_first_login_mode(make_app, scim_settings):
    app = make_app(**scim_settings, **{"provisioning.mode": "first_login"})
    scim = client(app)
    for response in (
        scim.get("/Users", status=403),
        scim.get("/Users", filter='userName eq "a@example.com"', status=403),
        scim.get("/Groups", status=403),
        scim.patch_ops("/Users/some-id", {"op": "Replace", "path": "active", "value": "False"}, status=403),
        scim.delete("/Users/some-id", status=403),
    ):
        assert response.json["status"] == "403" and response.json["detail"] == SCIM_DISABLED


def test_transforms_run_on_scim_writes_and_scim_still_returns_what_was_sent(make_app, scim_settings):
    app = make_app(
        **{
            **scim_settings,
            "gateway.plugins": "entra sqlstore transforms",
            "attributes.transforms": "lowercase_email map_values compose_display_name",
            "map_values.department": "100 = Sales\n200 = Engineering",
        }
    )
    scim = client(app)
    created = scim.create_user(
        "alice@example.com",
        name={"givenName": "Alice", "familyName": "Smith"},
        emails=[{"value": "Alice@Example.COM", "type": "work"}],
        **{ENTERPRISE: {"department": "200"}},
    )
    row = user_row(app)
    assert (row.email, row.email_key, row.department, row.display_name) == (
        "alice@example.com",
        "alice@example.com",
        "Engineering",
        "Alice Smith",
    )
    # Entra compares what it reads with its own values: it must read what it sent.
    resource = scim.get(f"/Users/{created['id']}").json
    assert resource["emails"][0]["value"] == "Alice@Example.COM" and resource[ENTERPRISE]["department"] == "200"

    scim.patch_ops(f"/Users/{created['id']}", {"op": "Replace", "path": f"{ENTERPRISE}:department", "value": "100"})
    assert user_row(app).department == "Sales"


def test_a_scim_write_reaches_a_signed_in_person_at_once_and_keeps_saml_fills(make_app, scim_settings, idp):
    app = make_app(**scim_settings)
    scim = client(app)
    created = scim.create_user("alice@example.com", displayName="Alice (SCIM)")
    sign_in(app, idp, attributes={**idp.claims("alice@example.com", oid=OID), "jobtitle": ["Engineer"]})
    assert app.get("/whoami").json["attributes"]["title"] == "Engineer"  # SAML fills what SCIM lacks

    scim.patch_ops(
        f"/Users/{created['id']}",
        {"op": "Replace", "path": "displayName", "value": "Alice Smith"},
        {"op": "Add", "path": f"{ENTERPRISE}:costCenter", "value": "4130"},
    )
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice Smith"
    assert who["attributes"]["costCenter"] == "4130"
    assert who["attributes"]["title"] == "Engineer"  # still filled from the last sign-in


def test_entra_patching_a_first_login_user_does_not_override_the_claims(make_app, scim_settings, idp):
    # auto authority: a user created at sign-in keeps SAML as the authority.
    app = make_app(**scim_settings)
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    scim = client(app)
    found = scim.get("/Users", filter='userName eq "alice@example.com"').json["Resources"][0]
    scim.patch_ops(
        f"/Users/{found['id']}",
        {"op": "Add", "path": "displayName", "value": "A. Example (Entra)"},
        {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Sales"},
    )
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice Example"  # the claim wins
    assert who["attributes"]["department"] == "Sales"  # no department claim: SCIM fills it
    assert who["email"] == "alice@example.com" and who["attributes"]["given_name"] == "Alice"


def test_admin_flag_follows_scim_group_writes(make_app, scim_settings):
    app = make_app(**scim_settings, **{"gateway.admin_groups": '"Gateway Admins"'})
    scim = client(app)
    alice = scim.create_user("alice@example.com")["id"]
    group = scim.create_group("Gateway Admins")["id"]
    assert not user_row(app).is_admin

    scim.patch_ops(f"/Groups/{group}", {"op": "Add", "path": "members", "value": [{"value": alice}]}, status=204)
    assert user_row(app).is_admin
    scim.patch_ops(f"/Groups/{group}", {"op": "Remove", "path": f'members[value eq "{alice}"]'}, status=204)
    assert not user_row(app).is_admin

    scim.patch_ops(f"/Groups/{group}", {"op": "Add", "path": "members", "value": [{"value": alice}]}, status=204)
    scim.patch_ops(f"/Groups/{group}", {"op": "Replace", "path": "displayName", "value": "Former Admins"}, status=204)
    assert not user_row(app).is_admin  # renamed away from gateway.admin_groups
    scim.patch_ops(f"/Groups/{group}", {"op": "Replace", "path": "displayName", "value": "gateway admins"}, status=204)
    assert user_row(app).is_admin
    scim.delete(f"/Groups/{group}")
    assert not user_row(app).is_admin


def test_a_display_name_change_in_the_claims_is_not_undone_by_scim_for_saml_users(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"attributes.authority": "saml"})
    scim = client(app)
    created = scim.create_user("alice@example.com", displayName="Alice (SCIM)")
    claims = idp.claims("alice@example.com", oid=OID)
    claims[MICROSOFT + "displayname"] = ["Alice From Entra"]
    sign_in(app, idp, attributes=claims)
    scim.patch_ops(f"/Users/{created['id']}", {"op": "Replace", "path": "title", "value": "CTO"})
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice From Entra" and who["attributes"]["title"] == "CTO"
