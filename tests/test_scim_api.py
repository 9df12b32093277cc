"""The SCIM protocol surface: auth, media types, errors, ETags, paging, projection,
discovery, hooks, audit and sessions; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway import ConfigError
from gateway.db.models import AuditEvent, GroupMember, SsoSession, utcnow
from scim_support import ENTERPRISE, PATCH_OP, SCIM, ScimClient, make_token

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def ops(*operations):
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def assert_error(response, status, scim_type=None):
    body = response.json
    assert response.content_type == "application/scim+json"
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and body["detail"]
    assert body.get("scimType") == scim_type, body


# ---------------------------------------------------------------- auth and transport


def test_missing_wrong_and_revoked_tokens_are_401_with_bearer_challenge(scim_app):
    token = make_token(scim_app)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        response = scim_app.get(f"{SCIM}/Users", headers=headers, status=401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(response, 401)
    scim_app.get(f"{SCIM}/Users", headers={"Authorization": f"Bearer {token}"}, status=200)
    from gateway.scim.tokens import revoke_token

    with Session(scim_app.app.registry.db_engine) as session, session.begin():
        revoke_token(session, "entra")
    scim_app.get(f"{SCIM}/Users", headers={"Authorization": f"Bearer {token}"}, status=401)


def test_two_tokens_work_side_by_side_for_rotation(scim_app):
    old, new = make_token(scim_app, "entra-old"), make_token(scim_app, "entra-new")
    for token in (old, new):
        scim_app.get(f"{SCIM}/Users", headers={"Authorization": f"Bearer {token}"}, status=200)


def test_last_used_is_written_at_most_once_a_minute(scim):
    from gateway.db.models import ScimToken

    engine = scim.app.app.registry.db_engine

    def last_used():
        with Session(engine) as session:
            return session.scalar(sa.select(ScimToken.last_used_at))

    scim.get("/Users")
    first = last_used()
    assert first is not None
    scim.get("/Users")
    assert last_used() == first
    cache = scim.app.app.registry.scim_tokens.cache
    before = cache.generation()
    with Session(engine) as session, session.begin():
        session.execute(sa.update(ScimToken).values(last_used_at=first - dt.timedelta(minutes=2)))
    # The token cache learns of the change at once on SQLite, within
    # milliseconds on PostgreSQL (NOTIFY): as a request a moment later would.
    deadline = time.monotonic() + 1
    while cache.generation() == before:
        assert time.monotonic() < deadline, "the token cache never heard of the change"
        time.sleep(0.001)
    scim.get("/Users")
    assert last_used() > first - dt.timedelta(minutes=1)


def test_media_types(scim):
    body = {"userName": "json@example.com"}
    scim.post("/Users", body, headers={"Content-Type": "application/json"})
    response = scim.post("/Users", body, status=415, headers={"Content-Type": "text/plain"})
    assert_error(response, 415)
    response = scim.get("/Users")
    assert response.headers["Content-Type"] == "application/scim+json"


def test_malformed_json_is_invalid_syntax(scim):
    assert_error(scim.post("/Users", b"{not json", status=400), 400, "invalidSyntax")
    assert_error(scim.post("/Users", [1, 2], status=400), 400, "invalidSyntax")


def test_numbers_come_back_exactly_as_sent_and_nan_is_not_json(make_app, scim_settings):
    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    client = ScimClient(app := make_app(**scim_settings, **{"scim.custom_schemas": urn}), make_token(app))
    numbers = {
        "Badge": 123456789012345678901234567890,
        "Floor": -9223372036854775809,
        "Ratio": 0.1,
        "Seat": 7,
        "Phone": "00441234567890123456789",
        "Name": "Zoë 名前",
    }
    created = client.post("/Users", {"userName": "numbers@example.com", urn: numbers}).json
    assert created[urn] == numbers
    got = client.get(f"/Users/{created['id']}").json
    assert (
        got[urn] == numbers and json.loads(client.get(f"/Users/{created['id']}").body)[urn]["Badge"] == numbers["Badge"]
    )
    for text in (
        b'{"userName": "nan@example.com", "title": NaN}',
        b'{"userName": "inf@example.com", "title": Infinity}',
        b'{"userName": "big@example.com", "x": 123456789012345678901234567890, "title": -Infinity}',
    ):
        assert_error(client.post("/Users", text, status=400), 400, "invalidSyntax")
    assert client.get("/Users").json["totalResults"] == 1


def test_body_over_the_limit_is_413(make_app, scim_settings):
    app = make_app(**scim_settings, **{"scim.max_body_bytes": "2048"})
    client = ScimClient(app, make_token(app))
    response = client.post("/Users", {"userName": "big", "displayName": "x" * 3000}, status=413)
    assert_error(response, 413)
    assert client.get("/Users").json["totalResults"] == 0


def test_unknown_paths_methods_and_me(scim):
    assert_error(scim.get("/Nope", status=404), 404)
    assert_error(scim.app.delete(f"{SCIM}/Users", headers=scim.headers(), status=405), 405)
    assert_error(scim.get("/Me", status=501), 501)
    uid = scim.create_user("methods@example.com")["id"]
    for method, path in (
        ("put", "/Users"),
        ("post", f"/Users/{uid}"),
        ("get", "/.search"),
        ("get", "/Users/.search"),
        ("delete", "/Schemas"),
        ("patch", "/Groups"),
    ):
        response = getattr(scim.app, method)(SCIM + path, headers=scim.headers(), status=405)
        assert_error(response, 405)
        assert method.upper() in response.json["detail"]
    # Without a token, a wrong method is still a 401 first.
    scim.app.put(f"{SCIM}/Users", status=401)
    # HEAD is GET without the body.
    head = scim.app.head(f"{SCIM}/Users/{uid}", headers=scim.headers(), status=200)
    assert head.body == b"" and head.headers["ETag"] == scim.get(f"/Users/{uid}").headers["ETag"]


def test_every_scim_response_echoes_its_correlation_id(scim):
    ok = scim.get("/Users", headers={"X-Request-Id": "corr-scim-list-1"})
    assert ok.headers["X-Request-Id"] == "corr-scim-list-1"
    failed = scim.get("/Users/no-such-id", status=404, headers={"X-Request-Id": "corr-scim-404-1"})
    assert failed.headers["X-Request-Id"] == "corr-scim-404-1"
    created = scim.post("/Users", {"userName": "corr@example.com"})
    assert len(created.headers["X-Request-Id"]) == 16  # made fresh, and recorded with the write


# ---------------------------------------------------------------- errors


def test_error_types(scim):
    user = scim.create_user("err@example.com")
    uid = user["id"]
    assert_error(scim.post("/Users", {"userName": "ERR@example.com"}, status=409), 409, "uniqueness")
    assert_error(scim.post("/Users", {"displayName": "no user name"}, status=400), 400, "invalidValue")
    assert_error(scim.post("/Users", {"userName": "u", "shoeSize": 42}, status=400), 400, "invalidValue")
    assert_error(scim.post("/Users", {"userName": "u", "active": "maybe"}, status=400), 400, "invalidValue")
    assert_error(
        scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "id", "value": "x"}, status=400), 400, "mutability"
    )
    assert_error(
        scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "meta.created", "value": "x"}, status=400),
        400,
        "mutability",
    )
    assert_error(
        scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "shoeSize", "value": 1}, status=400),
        400,
        "invalidPath",
    )
    assert_error(scim.patch_ops(f"/Users/{uid}", {"op": "remove"}, status=400), 400, "noTarget")
    assert_error(scim.patch_ops(f"/Users/{uid}", {"op": "remove", "path": "userName"}, status=400), 400, "mutability")
    assert_error(
        scim.patch_ops(
            f"/Users/{uid}", {"op": "replace", "path": 'emails[value co "x"].value', "value": "y"}, status=400
        ),
        400,
        "noTarget",
    )
    assert_error(scim.patch_ops(f"/Users/{uid}", {"op": "move", "path": "title"}, status=400), 400, "invalidSyntax")
    assert_error(scim.patch_ops("/Users/nobody", {"op": "add", "path": "title", "value": "x"}, status=404), 404)
    scim.create_group("Team")
    assert_error(scim.post("/Groups", {"displayName": "TEAM"}, status=409), 409, "uniqueness")


@pytest.mark.parametrize(
    "text",
    [
        'nosuch eq "x"',
        "userName eq",
        'userName xx "a"',
        '(userName eq "a"',
        'emails[nosuch eq "a"]',
        "active gt true",
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:nosuch eq "x"',
        'userName eq "a" garbage',
    ],
)
def test_unknown_attributes_and_bad_syntax_are_invalid_filter(scim, text):
    # An unfiltered (or empty-by-mistake) list would make Entra create duplicates.
    scim.create_user("someone@example.com")
    assert_error(scim.get("/Users", filter=text, status=400), 400, "invalidFilter")


@pytest.mark.parametrize(
    ("text", "quick"),
    [
        ('userName eq "Alice@Contoso.com"', True),
        ('  externalId EQ "a \\"quoted\\" id"  ', True),
        ('displayName eq "\\u00e9t\\u00e9"', True),
        ('name.givenName eq "Ann"', True),
        ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "R&D"', True),
        ('emails eq "a@b.c"', False),
        ('emails.value eq "a@b.c"', False),
        ('active eq "true"', False),
        ('meta.lastModified eq "2026-01-01T00:00:00Z"', False),
        ('manager eq "x"', False),
        ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq "x"', False),
        ('userName eq "a" or userName eq "b"', False),
        ('userName eq "bad \\x escape"', False),
        ('nosuch eq "x"', False),
        ('userName eq"x"', False),
    ],
)
def test_the_one_match_eq_lookup_means_what_the_full_parser_means(text, quick):
    # Entra's lookup before every create skips the tokeniser; whatever it
    # takes must come out as the full parser's own result, and what it
    # does not take (or would get wrong) goes to the full parser.
    from gateway.scim.errors import ScimError
    from gateway.scim.filters import _Parser, _simple_eq
    from gateway.scim.schemas import resource_types

    user_type = resource_types([])["User"]
    taken = _simple_eq(text, user_type)
    try:
        parser = _Parser(text, user_type)
        full = parser.parse_filter()
        parser.done()
    except ScimError:
        full = None
    assert (taken is not None) == quick
    assert taken is None or taken == full


# ---------------------------------------------------------------- ETags


def test_etags_and_if_match(scim):
    user = scim.create_user("etag@example.com")
    uid = user["id"]
    response = scim.get(f"/Users/{uid}")
    assert response.headers["ETag"] == 'W/"1"' == response.json["meta"]["version"]
    scim.get(f"/Users/{uid}", status=304, headers={"If-None-Match": 'W/"1"'})
    patched = scim.patch_ops(f"/Users/{uid}", {"op": "add", "path": "title", "value": "A"})
    assert patched.headers["ETag"] == 'W/"2"'
    response = scim.patch(
        f"/Users/{uid}", ops({"op": "add", "path": "title", "value": "B"}), status=412, headers={"If-Match": 'W/"1"'}
    )
    assert_error(response, 412)
    scim.patch(f"/Users/{uid}", ops({"op": "add", "path": "title", "value": "B"}), headers={"If-Match": 'W/"2"'})
    scim.put(f"/Users/{uid}", {"userName": "etag@example.com"}, status=412, headers={"If-Match": 'W/"2"'})
    scim.delete(f"/Users/{uid}", status=412, headers={"If-Match": 'W/"1"'})
    scim.delete(f"/Users/{uid}", headers={"If-Match": "*"})


def test_group_member_changes_move_the_etag(scim):
    uid = scim.create_user("m@example.com")["id"]
    group = scim.create_group("Movers")
    response = scim.patch_ops(
        f"/Groups/{group['id']}", {"op": "add", "path": "members", "value": [{"value": uid}]}, status=204
    )
    assert response.headers["ETag"] == 'W/"2"'


# ---------------------------------------------------------------- lists


def test_pagination_sorting_and_projection(make_app, scim_settings):
    app = make_app(**scim_settings, **{"scim.max_page_size": "3"})
    scim = ScimClient(app, make_token(app))
    for i in range(5):
        scim.create_user(f"page{i}@example.com", displayName=f"P{4 - i}", name={"givenName": f"G{i}"})
    page = scim.get("/Users", startIndex="2", count="10", sortBy="displayName", sortOrder="descending").json
    assert page["totalResults"] == 5 and page["itemsPerPage"] == 3 and page["startIndex"] == 2
    assert [r["displayName"] for r in page["Resources"]] == ["P3", "P2", "P1"]
    assert scim.get("/Users", count="0").json == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 5,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }
    only = scim.get("/Users", attributes="userName,name.givenName", sortBy="userName", count="1").json["Resources"][0]
    assert set(only) == {"schemas", "id", "userName", "name"} and only["name"] == {"givenName": "G0"}
    without = scim.get("/Users", excludedAttributes="name,meta", count="1").json["Resources"][0]
    assert "name" not in without and "meta" not in without and "userName" in without
    assert_error(scim.get("/Users", count="many", status=400), 400, "invalidValue")
    assert_error(scim.get("/Users", sortBy="nosuch", status=400), 400, "invalidValue")


def test_put_replaces_the_whole_user(scim):
    uid = scim.create_user("put@example.com", title="Old", nickName="n")["id"]
    replaced = scim.put(f"/Users/{uid}", {"userName": "put@example.com", "title": "New", "id": "ignored"}).json
    assert replaced["id"] == uid and replaced["title"] == "New" and "nickName" not in replaced


def test_put_group_sets_members(scim):
    a, b = scim.create_user("a@x.test")["id"], scim.create_user("b@x.test")["id"]
    group = scim.create_group("PutGroup", members=[a])
    replaced = scim.put(f"/Groups/{group['id']}", {"displayName": "PutGroup2", "members": [{"value": b}]}).json
    assert replaced["displayName"] == "PutGroup2" and [m["value"] for m in replaced["members"]] == [b]


# ---------------------------------------------------------------- discovery


def test_discovery_describes_what_is_supported(make_app, scim_settings):
    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    app = make_app(**scim_settings, **{"scim.custom_schemas": urn, "scim.max_page_size": "250"})
    scim = ScimClient(app, make_token(app))
    spc = scim.get("/ServiceProviderConfig").json
    assert spc["patch"]["supported"] and spc["sort"]["supported"] and spc["etag"]["supported"]
    assert spc["bulk"]["supported"] is False and spc["filter"]["maxResults"] == 250
    assert spc["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    types = scim.get("/ResourceTypes").json
    user_type = next(r for r in types["Resources"] if r["name"] == "User")
    assert {e["schema"] for e in user_type["schemaExtensions"]} == {ENTERPRISE, urn}
    schemas = {s["id"]: s for s in scim.get("/Schemas").json["Resources"]}
    assert set(schemas) == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        ENTERPRISE,
        urn,
    }
    enterprise = {a["name"] for a in schemas[ENTERPRISE]["attributes"]}
    assert enterprise == {"employeeNumber", "costCenter", "organization", "division", "department", "manager"}
    assert scim.get(f"/Schemas/{ENTERPRISE}").json["id"] == ENTERPRISE
    assert scim.get("/ResourceTypes/Group").json["endpoint"] == "/Groups"
    scim.get("/Schemas/urn:nope", status=404)


# ---------------------------------------------------------------- transactions


def test_a_failed_patch_leaves_no_partial_write(scim):
    uid = scim.create_user("partial@example.com")["id"]
    group = scim.create_group("Atomic")
    response = scim.patch_ops(
        f"/Groups/{group['id']}",
        {"op": "add", "path": "members", "value": [{"value": uid}]},
        {"op": "replace", "path": "displayName", "value": "Renamed"},
        {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
        status=400,
    )
    assert_error(response, 400, "invalidValue")
    got = scim.get(f"/Groups/{group['id']}").json
    assert got["members"] == [] and got["displayName"] == "Atomic" and got["meta"]["version"] == 'W/"1"'
    with Session(scim.app.app.registry.db_engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(GroupMember)) == 0
        actions = session.scalars(sa.select(AuditEvent.action)).all()
    assert "scim.group.patch" not in actions


# ---------------------------------------------------------------- hooks, audit, sessions

RECORDER = """
from gateway import hookimpl
from gateway.interfaces import Decision

EVENTS = []

@hookimpl
def gateway_user_event(event):
    EVENTS.append((event.type, event.user_name, event.actor, event.source, event.changed, bool(event.correlation_id)))

@hookimpl
def gateway_provisioning_decide(identity, user, source):
    if source == "scim" and identity.email and identity.email.endswith("@blocked.test"):
        return Decision.deny("Contractors are provisioned by the vendor portal.")
    return None
"""


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    directory = tmp_path / "site"
    directory.mkdir()
    (directory / "gw_test_scim_recorder.py").write_text(textwrap.dedent(RECORDER))
    monkeypatch.syspath_prepend(str(directory))
    yield "gw_test_scim_recorder"
    sys.modules.pop("gw_test_scim_recorder", None)


def test_events_audit_and_provisioning_decisions(make_app, scim_settings, recorder):
    app = make_app(**{**scim_settings, "gateway.plugins": f"entra sqlstore {recorder}"})
    scim = ScimClient(app, make_token(app, "entra-prod"))
    events = sys.modules[recorder].EVENTS

    denied = scim.post("/Users", {"userName": "c@blocked.test", "emails": [{"value": "c@blocked.test"}]}, status=403)
    assert_error(denied, 403)
    assert denied.json["detail"] == "Contractors are provisioned by the vendor portal."
    assert scim.get("/Users").json["totalResults"] == 0

    uid = scim.create_user("ev@example.com")["id"]
    scim.patch_ops(f"/Users/{uid}", {"op": "add", "path": "title", "value": "Dev"})
    scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "active", "value": "False"})
    scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "active", "value": "True"})
    scim.delete(f"/Users/{uid}")
    assert events == [
        # A refusal is an event too (gateway_event_committed announces it though the request is rolled back).
        ("denied", "c@blocked.test", "scim:entra-prod", "scim", (), True),
        ("created", "ev@example.com", "scim:entra-prod", "scim", (), True),
        ("updated", "ev@example.com", "scim:entra-prod", "scim", ("title",), True),
        ("deactivated", "ev@example.com", "scim:entra-prod", "scim", (), True),
        ("reactivated", "ev@example.com", "scim:entra-prod", "scim", (), True),
        ("deleted", "ev@example.com", "scim:entra-prod", "scim", (), True),
    ]
    with Session(app.app.registry.db_engine) as session:
        rows = session.execute(
            sa.select(AuditEvent.action, AuditEvent.actor, AuditEvent.target_name).order_by(AuditEvent.id)
        ).all()
    assert [r.action for r in rows] == [
        "scim.user.create",
        "scim.user.patch",
        "scim.user.patch",
        "scim.user.patch",
        "scim.user.delete",
    ]
    assert {r.actor for r in rows} == {"scim:entra-prod"} and {r.target_name for r in rows} == {"ev@example.com"}


def test_a_group_patch_of_members_is_audited_and_a_missing_group_is_404(scim):
    uid = scim.create_user("aud@example.com")["id"]
    gid = scim.create_group("Audited")["id"]
    add = {"op": "Add", "path": "members", "value": [{"value": uid}]}
    added = scim.patch_ops(f"/Groups/{gid}", add, status=204)
    scim.patch_ops(f"/Groups/{gid}", {"op": "Remove", "path": f'members[value eq "{uid}"]'}, status=204)
    assert scim.get(f"/Groups/{gid}").json["meta"]["version"] == 'W/"3"' and added.headers["ETag"] == 'W/"2"'
    # Members-only PATCHes go without a read of the group first: a group that
    # is not there is still a 404, and nothing is written.
    for op in (
        add,
        {"op": "Remove", "path": "members", "value": [{"value": uid}]},
        {"op": "remove", "path": f'members[value eq "{uid}"]'},
    ):
        assert_error(scim.patch_ops("/Groups/no-such-group", op, status=404), 404)
    assert_error(
        scim.patch_ops(f"/Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": "nobody"}]}, status=400),
        400,
        "invalidValue",
    )
    engine = scim.app.app.registry.db_engine
    with Session(engine) as session:
        rows = session.execute(
            sa.select(AuditEvent.action, AuditEvent.target_id, AuditEvent.target_name, AuditEvent.details)
            .where(AuditEvent.action == "scim.group.patch")
            .order_by(AuditEvent.id)
        ).all()
        assert session.scalar(sa.select(sa.func.count()).select_from(GroupMember)) == 0
    assert [(r.target_id, r.target_name) for r in rows] == [(gid, "Audited")] * 2
    assert [r.details for r in rows] == [{"members_added": 1}, {"members_removed": 1}]


def test_deactivation_ends_sessions_at_once(scim):
    uid = scim.create_user("sess@example.com")["id"]
    engine = scim.app.app.registry.db_engine
    with Session(engine) as session, session.begin():
        session.add(
            SsoSession(id_hash="s" * 64, user_id=uid, expires_at=utcnow() + dt.timedelta(hours=1), csrf_token="c")
        )
    scim.patch_ops(f"/Users/{uid}", {"op": "replace", "path": "active", "value": "False"})
    with Session(engine) as session:
        assert session.scalar(sa.select(SsoSession.ended_at)) is not None
    scim.delete(f"/Users/{uid}")
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SsoSession)) == 0


# ---------------------------------------------------------------- configuration


def test_unknown_storage_backend_stops_start_up(make_app, scim_settings):
    with pytest.raises(ConfigError) as info:
        make_app(**scim_settings, **{"scim.storage": "ldapstore"})
    assert str(info.value).startswith('scim.storage: no enabled plugin registers the SCIM storage backend "ldapstore"')


def test_without_any_storage_plugin_scim_is_off(make_app):
    app = make_app(**{"gateway.plugins": "entra"})
    app.get(f"{SCIM}/Users", status=404)
    assert "scim" in app.app.registry.warning_checks


# ---------------------------------------------------------------- large groups


def test_a_group_of_50000_changes_a_row_at_a_time(scim):
    """Adding and removing members of a 50,000-member group never reads or
    rewrites the member list: the statements run do not grow with the group."""
    from gateway.db.models import Group, User, new_id

    engine = scim.app.app.registry.db_engine
    group = scim.create_group("Everyone")
    now = utcnow()
    ids = [new_id() for _ in range(50_002)]
    with engine.begin() as connection:
        for start in range(0, 50_000, 10_000):
            chunk = ids[start : start + 10_000]
            connection.execute(
                sa.insert(User),
                [
                    {
                        "id": u,
                        "user_name": u,
                        "user_name_key": u,
                        "active": True,
                        "scim_data": {"userName": u},
                        "attributes": {},
                        "provisioned_by": "scim",
                        "is_admin": False,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for u in chunk
                ],
            )
            connection.execute(
                sa.insert(GroupMember), [{"group_id": group["id"], "user_id": u, "created_at": now} for u in chunk]
            )
    extra = [scim.create_user(f"late{i}@example.com")["id"] for i in range(2)]

    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    scim.patch_ops(
        f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"value": u} for u in extra]}, status=204
    )
    scim.patch_ops(
        f"/Groups/{group['id']}", {"op": "Remove", "path": "members", "value": [{"value": ids[0]}]}, status=204
    )
    sa.event.remove(engine, "before_cursor_execute", record)
    found = scim.get("/Groups", filter='displayName eq "Everyone"', excludedAttributes="members").json["Resources"][0]
    assert "members" not in found and found["meta"]["version"] == 'W/"3"'
    member_reads = [
        s
        for s in statements
        if "FROM group_members" in s and "SELECT" in s.upper() and "group_members.user_id IN" not in s
    ]
    assert member_reads == [], member_reads
    assert len(statements) < 40
    with Session(engine) as session:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(GroupMember).where(GroupMember.group_id == group["id"])
        )
        assert count == 50_000 + 2 - 1
        assert session.get(Group, group["id"]).version == 3


def test_scim_reads_run_without_a_transaction_and_writes_keep_theirs(scim):
    # The shipped storage reads on pooled autocommit connections: pyramid_tm
    # has nothing to do for a SCIM GET; every write keeps its transaction.
    from pyramid.request import Request

    from gateway.db import needs_transaction

    registry = scim.app.app.registry
    assert registry.scim_storage.reads_without_transaction

    def needs(method, path):
        request = Request.blank(path, method=method)
        request.registry = registry
        return needs_transaction(request)

    assert not needs("GET", "/scim/v2/Users")
    assert not needs("HEAD", "/scim/v2/Groups/abc")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert needs(method, "/scim/v2/Users")
    assert needs("POST", "/scim/v2/.search")
    assert needs("GET", "/")
    # Reads still see every committed write, and a write's ETag matches the GET's.
    created = scim.post(
        "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "tx@contoso.com"}
    )
    got = scim.get(f"/Users/{created.json['id']}")
    assert got.headers["ETag"] == created.headers["ETag"]
    assert scim.get("/Users", filter='userName eq "TX@contoso.com"').json["totalResults"] == 1


def test_a_created_user_is_stored_with_its_mapped_profile_in_one_insert(scim):
    # The sqlstore writes the provisioning profile with the row, so the sync
    # after it has nothing to change (same row as INSERT + UPDATE gave before).
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from gateway.db.models import User

    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": "mapped@contoso.com",
        "displayName": "  Mapped Person ",
        "emails": [{"type": "work", "value": "Mapped@Contoso.com"}],
        ENTERPRISE: {"department": "Sales", "employeeNumber": "42", "costCenter": "CC1"},
    }
    created = scim.post("/Users", body).json
    with Session(scim.app.app.registry.db_engine) as session:
        user = session.scalar(sa.select(User).where(User.id == created["id"]))
        assert (user.display_name, user.email, user.email_key, user.department) == (
            "Mapped Person",
            "Mapped@Contoso.com",
            "mapped@contoso.com",
            "Sales",
        )
        assert user.attributes == {"employeeNumber": "42", "costCenter": "CC1"}
        assert user.provisioned_by == "scim"
    assert scim.get(f"/Users/{created['id']}").json["displayName"] == "  Mapped Person "


def test_a_key_lookup_that_asks_for_no_resources_still_counts_them(scim):
    # count=0 (RFC 7644 3.4.2.4: "only totalResults") and a page past the
    # matches both need the separate count, which the prebuilt lookup runs.
    scim.create_user("counted@contoso.com")
    page = scim.get("/Users", filter='userName eq "COUNTED@contoso.com"', count="0").json
    assert page["totalResults"] == 1 and page.get("Resources", []) == []
    page = scim.get("/Users", filter='userName eq "counted@contoso.com"', startIndex="2").json
    assert page["totalResults"] == 1 and page.get("Resources", []) == []
