"""Entra's SCIM dialect, each case with Microsoft's own example bodies (entra.md §3.5, §3.6)."""

from __future__ import annotations

import pytest

from scim_support import ENTERPRISE, PATCH_OP

# POST /Users, verbatim from "Develop and plan provisioning for a SCIM endpoint".
MS_CREATE_USER = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
    "active": True,
    "emails": [
        {"primary": True, "type": "work", "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"}
    ],
    "meta": {"resourceType": "User"},
    "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
    "roles": [],
}

# The older example: explicit nulls and a typo'd enterprise URN in "schemas".
MS_OLD_CREATE_USER = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0User",
    ],
    "externalId": "jyoung",
    "userName": "jyoung@testuser.com",
    "active": True,
    "addresses": None,
    "displayName": "Joy Young",
    "emails": [{"type": "work", "value": "jyoung@Contoso.com", "primary": True}],
    "meta": {"resourceType": "User"},
    "name": {"familyName": "Young", "givenName": "Joy"},
    "phoneNumbers": None,
    "preferredLanguage": None,
    "title": None,
    "department": None,
    "manager": None,
}

MS_CREATE_GROUP = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
    ],
    "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
    "displayName": "displayName",
    "meta": {"resourceType": "Group"},
}


def ops(*operations):
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


@pytest.fixture
def ms_user(scim):
    return scim.post("/Users", MS_CREATE_USER).json


def test_test_connection_is_an_empty_list_response(scim):
    response = scim.get("/Users", filter='userName eq "8c1f4d4e-2bb8-4b5a-9f3c-6d8e4c2f1a07"')
    assert response.status_int == 200
    assert response.content_type == "application/scim+json"
    assert response.json == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


def test_create_user_as_microsoft_shows_it(scim, ms_user):
    assert ms_user["id"]
    for key in ("externalId", "userName", "active", "emails", "name"):
        assert ms_user[key] == MS_CREATE_USER[key]
    assert ms_user["meta"]["resourceType"] == "User"
    # Entra's lookup before create, then its matching GET by id.
    found = scim.get("/Users", filter=f'userName eq "{MS_CREATE_USER["userName"].upper()}"').json
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == ms_user["id"]
    assert scim.get(f"/Users/{ms_user['id']}").json["emails"] == MS_CREATE_USER["emails"]


def test_old_example_with_nulls_and_a_typoed_urn_is_accepted(scim):
    created = scim.post("/Users", MS_OLD_CREATE_USER).json
    assert created["displayName"] == "Joy Young"
    assert "addresses" not in created and "title" not in created
    # Its unquoted filter form, from the same docs.
    assert scim.get("/Users", filter="externalId eq jyoung").json["totalResults"] == 1


def test_the_aadoptscim062020_flag_and_lower_case_paths_are_fine(scim, ms_user):
    response = scim.app.get(f"/scim/v2/users/{ms_user['id']}?aadOptscim062020", headers=scim.headers())
    assert response.json["id"] == ms_user["id"]
    assert scim.app.get("/scim/v2/groups?aadOptscim062020", headers=scim.headers()).json["totalResults"] == 0


@pytest.mark.parametrize(
    "value, active", [(False, False), ("False", False), ("false", False), ("True", True), (True, True)]
)
def test_active_in_every_spelling_entra_sends(scim, ms_user, value, active):
    # "Disable user" without the flag: {"op":"Replace","path":"active","value":"False"}.
    patched = scim.patch(f"/Users/{ms_user['id']}", ops({"op": "Replace", "path": "active", "value": value})).json
    assert patched["active"] is active
    assert scim.get(f"/Users/{ms_user['id']}").json["active"] is active


def test_op_names_in_any_case(scim, ms_user):
    scim.patch(
        f"/Users/{ms_user['id']}",
        ops(
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "REPLACE", "path": "title", "value": "Engineer"},
            {"op": "Remove", "path": "nickName"},
        ),
    )
    user = scim.get(f"/Users/{ms_user['id']}").json
    assert user["title"] == "Engineer" and "nickName" not in user


def test_microsoft_update_example_multi_and_single_valued(scim, ms_user):
    patched = scim.patch(
        f"/Users/{ms_user['id']}",
        ops(
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        ),
    ).json
    assert patched["emails"] == [{"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}]
    assert patched["name"]["familyName"] == "updatedFamilyName"
    assert patched["name"]["givenName"] == "givenName"


def test_pathless_ops_with_dotted_and_urn_keys(scim, ms_user):
    # With aadOptscim062020: one path-less replace carrying several attributes.
    patched = scim.patch(
        f"/Users/{ms_user['id']}",
        ops(
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "Bjfe@contoso.com"},
            {
                "op": "replace",
                "value": {
                    "displayName": "Bjfe",
                    "name.givenName": "Kkom",
                    "name.familyName": "Unua",
                    f"{ENTERPRISE}:employeeNumber": "Aklq",
                },
            },
            # And the add form seen in real traffic without the flag.
            {"op": "add", "value": {"title": "Bar Foo", "name.formatted": "Foo Bar"}},
        ),
    ).json
    assert patched["displayName"] == "Bjfe" and patched["title"] == "Bar Foo"
    assert patched["name"] == {"formatted": "Foo Bar", "familyName": "Unua", "givenName": "Kkom"}
    assert patched[ENTERPRISE] == {"employeeNumber": "Aklq"}
    assert ENTERPRISE in patched["schemas"]


def test_value_path_targets_are_created_when_absent(scim, ms_user):
    # phoneNumbers[type eq "work"] does not exist yet: create it, do not fail the
    # whole PATCH (which would also drop the active change).
    patched = scim.patch(
        f"/Users/{ms_user['id']}",
        ops(
            {"op": "Replace", "path": 'phoneNumbers[type eq "work"].value', "value": "+1 425 555 0100"},
            {"op": "Replace", "path": 'addresses[type eq "work"].formatted', "value": "18/2111"},
            {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Retail"},
            {"op": "Replace", "path": "active", "value": "False"},
        ),
    ).json
    assert patched["phoneNumbers"] == [{"type": "work", "value": "+1 425 555 0100"}]
    assert patched["addresses"] == [{"type": "work", "formatted": "18/2111"}]
    assert patched[ENTERPRISE]["department"] == "Retail"
    assert patched["active"] is False
    found = scim.get("/Users", filter='phoneNumbers[type eq "work"].value eq "+1 425 555 0100"').json
    assert found["totalResults"] == 1


@pytest.mark.parametrize("form", ["plain", "object", "list"])
def test_manager_in_every_form(scim, ms_user, form):
    manager = scim.create_user("boss@contoso.com")["id"]
    value = {
        "plain": manager,
        "object": {"value": manager},
        "list": [{"$ref": f"../Users/{manager}", "value": manager}],
    }[form]
    path = "manager" if form == "list" else f"{ENTERPRISE}:manager"
    scim.patch(
        f"/Users/{ms_user['id']}",
        ops({"op": "Add", "path": path if form != "list" else f"{ENTERPRISE}:manager", "value": value}),
    )
    user = scim.get(f"/Users/{ms_user['id']}").json
    assert user[ENTERPRISE]["manager"]["value"] == manager
    # The older reference check: id and manager in one filter.
    query = f'id eq "{ms_user["id"]}" and {ENTERPRISE}:manager eq "{manager}"'
    assert scim.get("/Users", filter=query, attributes="id").json["Resources"] == [
        {"schemas": user["schemas"], "id": ms_user["id"]}
    ]


def test_groups_entra_way(scim):
    users = [scim.create_user(f"member{i}@contoso.com")["id"] for i in range(4)]
    # GET by name (nothing), POST with the non-standard schema URI, no members.
    assert (
        scim.get("/Groups", excludedAttributes="members", filter='displayName eq "displayName"').json["totalResults"]
        == 0
    )
    group = scim.post("/Groups", MS_CREATE_GROUP).json
    assert group["displayName"] == "displayName" and group["members"] == []
    gid = group["id"]
    # Several members added in one PATCH, answered 204.
    response = scim.patch(
        f"/Groups/{gid}",
        ops({"op": "Add", "path": "members", "value": [{"$ref": None, "value": u} for u in users]}),
        status=204,
    )
    assert response.body == b""
    # Default removal: Remove + path members + a list: only those go.
    scim.patch(f"/Groups/{gid}", ops({"op": "Remove", "path": "members", "value": [{"value": users[0]}]}), status=204)
    # With aadOptscim062020: members[value eq "..."].
    scim.patch(f"/Groups/{gid}", ops({"op": "remove", "path": f'members[value eq "{users[1]}"]'}), status=204)
    members = {m["value"] for m in scim.get(f"/Groups/{gid}").json["members"]}
    assert members == set(users[2:])
    # Rename, then Entra's lookup without members.
    scim.patch(
        f"/Groups/{gid}", ops({"op": "Replace", "path": "displayName", "value": "updatedDisplayName"}), status=204
    )
    found = scim.get("/Groups", excludedAttributes="members", filter='displayName eq "updatedDisplayName"').json
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]
    assert "members" not in scim.get(f"/Groups/{gid}", excludedAttributes="members").json
    scim.delete(f"/Groups/{gid}")
    scim.get(f"/Groups/{gid}", status=404)


def test_get_unknown_user_is_a_scim_404(scim):
    body = scim.get("/Users/5171a35d82074e068ce2", status=404).json
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "404"


def test_deactivate_keeps_the_user_and_delete_removes_it(scim, ms_user):
    uid = ms_user["id"]
    scim.patch(
        f"/Users/{uid}", {"Operations": [{"op": "Replace", "path": "active", "value": False}], "schemas": [PATCH_OP]}
    )
    assert scim.get(f"/Users/{uid}").json["active"] is False
    assert scim.get("/Users", filter=f'userName eq "{MS_CREATE_USER["userName"]}"').json["totalResults"] == 1
    scim.delete(f"/Users/{uid}")
    scim.get(f"/Users/{uid}", status=404)
    scim.delete(f"/Users/{uid}", status=404)


def test_username_rename_is_accepted_by_default_and_refused_when_switched_off(make_app, scim_settings):
    from scim_support import ScimClient, make_token

    for allowed, status in ((None, 200), ("false", 400), ("true", 200)):
        new_name = f"5b50642d-79fc-4410-9e90-4c077cdd1a59-{allowed}@testuser.com"
        rename = ops({"op": "Replace", "path": "userName", "value": new_name})
        setting = {} if allowed is None else {"scim.allow_username_change": allowed}
        app = make_app(**scim_settings, **setting)
        client = ScimClient(app, make_token(app, f"t-{allowed}"))
        uid = client.post("/Users", {**MS_CREATE_USER, "userName": f"u-{allowed}"}).json["id"]
        body = client.patch(f"/Users/{uid}", rename, status=status).json
        if status == 400:
            assert body["scimType"] == "mutability"
        else:
            assert body["userName"] == new_name
        # The same value again is not a change.
        client.patch(
            f"/Users/{uid}",
            ops({"op": "Replace", "path": "userName", "value": client.get(f"/Users/{uid}").json["userName"]}),
        )


def test_role_assignments_with_json_encoded_values_are_stored_as_sent(scim, ms_user):
    role = '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"25","displayName":"Role1234"}'
    patched = scim.patch(
        f"/Users/{ms_user['id']}", ops({"op": "Add", "path": "roles", "value": [{"value": role}]})
    ).json
    assert patched["roles"] == [{"value": role}]


def test_custom_extension_attributes_round_trip(make_app, scim_settings):
    from scim_support import ScimClient, make_token

    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    app = make_app(**scim_settings, **{"scim.custom_schemas": urn})
    client = ScimClient(app, make_token(app))
    # POST nests them under the URN, without listing the URN in "schemas".
    created = client.post("/Users", {**MS_CREATE_USER, urn: {"CostCode": "CC-42"}}).json
    assert created[urn] == {"CostCode": "CC-42"} and urn in created["schemas"]
    # PATCH uses the full URN path.
    patched = client.patch(
        f"/Users/{created['id']}", ops({"op": "Add", "path": f"{urn}:blob_entity", "value": "x1"})
    ).json
    assert patched[urn] == {"CostCode": "CC-42", "blob_entity": "x1"}
    assert client.get("/Users", filter=f'{urn}:CostCode eq "cc-42"').json["totalResults"] == 1
    # Unconfigured extensions are not silently accepted.
    body = client.post("/Users", {"userName": "x", "urn:other:params:1.0:UserAttribute": {"a": "b"}}, status=400).json
    assert body["scimType"] == "invalidValue"
