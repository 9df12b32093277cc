"""The JSON-lines sink: what committed, once, in order."""


def test_user_changes_are_written_after_commit(gateway_scim, written):
    user = gateway_scim.create_user("jo@acme.example")
    gateway_scim.patch_ops(f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    records = written()
    assert [(r["kind"], r["type"], r["id"], r["name"]) for r in records] == [
        ("user", "created", user["id"], "jo@acme.example"),
        ("user", "deactivated", user["id"], "jo@acme.example"),
    ]
    assert all(r["actor"] == "scim:entra" and r["source"] == "scim" for r in records)


def test_group_changes_are_written(gateway_scim, written):
    user = gateway_scim.create_user("jo@acme.example")
    group = gateway_scim.create_group("Finance", members=[user["id"]])
    assert [(r["kind"], r["type"]) for r in written()][1:] == [("group", "created"), ("group", "members_added")]
    assert written()[-1]["user_ids"] == [user["id"]] and written()[-1]["id"] == group["id"]


def test_a_refused_write_is_not_written(gateway_scim, written):
    gateway_scim.create_user("jo@acme.example")
    gateway_scim.post(
        "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "JO@acme.example"}, status=409
    )
    assert [r["type"] for r in written()] == ["created"]


def test_sign_ins_and_refusals_are_written(gateway_sign_in, written):
    gateway_sign_in("ann@acme.example")
    gateway_sign_in("cal@contractors.acme.example", groups=(), status=403)
    # (Group events come first: in first_login mode the groups claim creates the groups.)
    assert [(r["type"], r["name"]) for r in written() if r["kind"] == "user"] == [
        ("created", "ann@acme.example"),
        ("signed_in", "ann@acme.example"),
        ("denied", "cal@contractors.acme.example"),
    ]
    assert "approved group" in written()[-1]["reason"]
