"""Entra renames a person (their UPN changes): PATCH Replace userName is
accepted by default, and the person stays the same user everywhere.

The IdP's object id is the lasting key for sign-in, so the renamed person's
next sign-in under the new name finds the same user, with the same groups;
the old name stops matching a SCIM filter and forward-auth shows the new one.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

from saml_support import sign_in
from scim_support import PATCH_OP, ScimClient, make_token

OID = "4a0c1b8e-5d7f-4c35-9a61-2f4d8e9b7c10"
OLD, NEW = "jane.doe@example.com", "jane.smith@example.com"
PROXY = {"REMOTE_ADDR": "127.0.0.1"}
ORIGINAL = {"X-Original-URL": "https://app.example.com/"}


def auth_user(app) -> str:
    return app.get("/auth", headers=ORIGINAL, extra_environ=PROXY, status=200).headers["X-Auth-Request-User"]


def test_a_renamed_person_signs_in_under_the_new_name_as_the_same_user(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": "*.example.com"})
    scim = ScimClient(app, make_token(app))
    created = scim.create_user(OLD, displayName="Jane Doe")
    group = scim.create_group("Finance", members=[created["id"]])

    sign_in(app, idp, OLD, attributes=idp.claims(OLD, oid=OID, groups=()))
    before = app.get("/whoami").json
    assert before["userName"] == OLD and "Finance" in before["groups"]
    assert auth_user(app) == OLD

    # What Entra sends when the UPN changes (the shape of Microsoft's SCIM validator).
    renamed = scim.patch(
        f"/Users/{created['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "userName", "value": NEW}]},
    ).json
    assert renamed["userName"] == NEW and renamed["id"] == created["id"]
    # The session that was open sees the new name at once.
    assert auth_user(app) == NEW

    app.reset()  # a new browser: the person signs in again, under the new name
    sign_in(app, idp, NEW, attributes=idp.claims(NEW, oid=OID, groups=()))
    after = app.get("/whoami").json
    assert after["userName"] == NEW
    assert after["id"] == before["id"] and after["groups"] == before["groups"]
    assert auth_user(app) == NEW

    assert scim.get("/Users", filter=f'userName eq "{OLD}"').json["totalResults"] == 0
    found = scim.get("/Users", filter=f'userName eq "{NEW}"').json["Resources"]
    assert [u["id"] for u in found] == [created["id"]]
    members = scim.get(f"/Groups/{group['id']}").json["members"]
    assert [m["value"] for m in members] == [created["id"]]
