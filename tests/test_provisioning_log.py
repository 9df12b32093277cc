"""Every SCIM request leaves a provisioning log row: what Entra sent, what it got, never a secret."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from gateway.db.models import ProvisioningLogEntry, ScimToken, utcnow
from scim_support import ScimClient, make_token

#: When the running test began: an app of an earlier test on the same
#: PostgreSQL schema may write its last queued rows after that test's truncation.
STARTED = {}


@pytest.fixture(autouse=True)
def since():
    STARTED["at"] = utcnow()


def mine():
    return ProvisioningLogEntry.at >= STARTED["at"]


def rows(app) -> list:
    """This test's rows as written: flushed first (the writer thread runs every half second)."""
    app.app.registry.provisioning_log.flush()
    with app.app.registry.db_engine.connect() as connection:
        return list(connection.execute(sa.select(ProvisioningLogEntry).where(mine()).order_by(ProvisioningLogEntry.id)))


def test_entras_failed_requests_are_logged_with_status_and_scim_type(scim, scim_app):
    alice = scim.create_user("alice@example.com")
    scim.post(
        "/Users",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com"},
        status=409,
    )
    scim.patch_ops(f"/Users/{alice['id']}", {"op": "frobnicate", "path": "active", "value": False}, status=400)
    scim.get("/Users/no-such-id", status=404)
    scim.get("/Users", filter='userName eq "alice@example.com"')

    logged = rows(scim_app)
    assert [(r.method, r.status, r.scim_type) for r in logged] == [
        ("POST", 201, None),
        ("POST", 409, "uniqueness"),
        ("PATCH", 400, "invalidSyntax"),
        ("GET", 404, None),
        ("GET", 200, None),
    ]
    created, duplicate, patch, missing, lookup = logged
    assert created.resource_type == "User" and created.resource_id == alice["id"]
    assert created.resource_name == "alice@example.com" and created.error is None
    assert created.token_name == "entra" and created.duration_ms > 0 and created.correlation_id
    # The rolled-back write is logged all the same, with what the client was told.
    assert duplicate.resource_name == "alice@example.com" and duplicate.resource_id is None
    assert "alice@example.com" in duplicate.error or "taken" in duplicate.error
    assert patch.resource_id == alice["id"] and "frobnicate" in patch.error
    assert missing.path == "/scim/v2/Users/no-such-id" and missing.error
    assert lookup.path == '/scim/v2/Users?filter=userName eq "alice@example.com"'
    # Bodies are not kept unless asked.
    assert all(r.body is None for r in logged)


def test_every_row_carries_the_correlation_id_the_client_got(scim, scim_app):
    response = scim.get("/Users", headers={"X-Request-Id": "entra-cycle-0001"})
    assert response.headers["X-Request-Id"] == "entra-cycle-0001"
    assert rows(scim_app)[-1].correlation_id == "entra-cycle-0001"


def test_refused_tokens_and_unknown_paths_are_logged_without_a_token_name(scim, scim_app):
    scim_app.get("/scim/v2/Users", headers={"Authorization": "Bearer gws_not-a-token"}, status=401)
    scim_app.get("/scim/v2/Users", status=401)
    scim.get("/Nothing/here", status=404)
    logged = rows(scim_app)
    assert [(r.status, r.token_name) for r in logged] == [(401, None), (401, None), (404, None)]
    assert logged[0].error == "the bearer token is not valid"
    assert logged[2].error == "no SCIM endpoint at /scim/v2/Nothing/here"


def test_bodies_are_kept_only_when_asked_and_never_with_secrets(make_app, database_url):
    app = make_app(
        **{
            "sqlalchemy.url": database_url,
            "gateway.plugins": "entra sqlstore",
            "admin.provisioning_log_bodies": "true",
        }
    )
    token = make_token(app)
    scim = ScimClient(app, token)
    scim.create_user("bob@example.com", displayName="Bob")
    # Refused (the gateway stores no passwords), and logged with its body, less the secrets.
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "eve@example.com",
        "password": "Hunter2!",
        "urn:example:custom": {"apiToken": "t0ps3cret", "clientSecret": "s3cret", "badge": 7},
    }
    scim.post("/Users", user, status=400)
    scim.patch_ops("/Users/x", {"op": "replace", "path": "password", "value": "Hunter3!"}, status=404)
    logged = rows(app)
    assert logged[0].body["userName"] == "bob@example.com" and logged[0].body["displayName"] == "Bob"
    assert logged[1].body["password"] == "(removed)"
    assert logged[1].body["urn:example:custom"] == {"apiToken": "(removed)", "clientSecret": "(removed)", "badge": 7}
    assert logged[2].body["Operations"] == [{"op": "replace", "path": "password", "value": "(removed)"}]
    # A PATCH carries the secret as a value of an operation on "password": gone too.
    text = json.dumps([dict(r._mapping) for r in logged], default=str)
    for secret in ("Hunter2!", "Hunter3!", "t0ps3cret", "s3cret", token):
        assert secret not in text


def test_the_token_page_learns_where_a_token_was_last_used(scim, scim_app):
    scim_app.get("/scim/v2/Users", headers=scim.headers(), extra_environ={"REMOTE_ADDR": "203.0.113.9"})
    with scim_app.app.registry.db_engine.connect() as connection:
        token = connection.execute(sa.select(ScimToken)).one()
    assert token.last_used_address == "203.0.113.9" and token.last_used_at is not None


def test_rows_written_before_the_app_closes_are_not_lost(scim, scim_app):
    scim.create_user("carol@example.com")
    registry = scim_app.app.registry
    registry.provisioning_log.close()
    with registry.db_engine.connect() as connection:
        names = connection.scalars(sa.select(ProvisioningLogEntry.resource_name).where(mine())).all()
    assert names == ["carol@example.com"]


def test_the_writer_thread_writes_without_being_asked(scim, scim_app):
    import time

    scim.get("/Users")
    deadline = time.monotonic() + 5
    engine = scim_app.app.registry.db_engine
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.scalar(sa.select(sa.func.count()).where(mine())):
                return
        time.sleep(0.05)
    raise AssertionError("the provisioning log row was not written within 5 s")


def test_rows_wait_for_a_database_that_refuses_them(scim, scim_app, caplog, monkeypatch):
    provisioning_log = scim_app.app.registry.provisioning_log
    monkeypatch.setattr(provisioning_log, "_start", lambda: None)  # no writer thread: this test flushes
    scim.create_user("dave@example.com")
    engine = provisioning_log.engine

    class Down:
        def begin(self):
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    provisioning_log.engine = Down()
    assert provisioning_log.flush() == 0
    assert "could not write 1 rows; will retry" in caplog.text
    provisioning_log.engine = engine
    assert [r.resource_name for r in rows(scim_app)] == ["dave@example.com"]


def test_the_provisioning_page_filters_by_status_token_user_and_time(make_app, database_url, idp, monkeypatch):
    from gateway.admin import signins
    from saml_support import sign_in

    app = make_app(
        **{"sqlalchemy.url": database_url, "gateway.plugins": "entra sqlstore", "gateway.admin_groups": "Staff"}
    )
    sign_in(app, idp, name="admin@example.com")
    entra, other = ScimClient(app, make_token(app, "entra")), ScimClient(app, make_token(app, "other"))
    alice = entra.create_user("alice@example.com")
    entra.post(
        "/Users",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com"},
        status=409,
    )
    other.get("/Users", filter='userName eq "bob@example.com"')
    entra.patch_ops(f"/Users/{alice['id']}", {"op": "replace", "path": "active", "value": False}, status=200)

    def listed(**params):
        page = app.get("/admin/provisioning", params)
        table = page.html.find(id="requests")
        return (
            [tr.find_all("td")[3].get_text(" ", strip=True).split()[0] for tr in table.find("tbody").find_all("tr")]
            if table
            else []
        )

    assert listed() == ["200", "200", "409", "201"]
    assert listed(status="errors") == ["409"] and listed(status="2xx") == ["200", "200", "201"]
    assert listed(status="409") == ["409"] and listed(token="other") == ["200"]
    # A user by userName: the create, the refused duplicate (by the name it carried) and the PATCH (by id).
    assert listed(user="Alice@Example.com") == ["200", "409", "201"]
    assert listed(user=alice["id"]) == ["200", "201"]
    assert listed(since="2000-01-01T00:00", until="2000-01-02T00:00") == []
    page = app.get("/admin/provisioning")
    failures = page.html.find(id="failures").text
    assert "409" in failures and "uniqueness" in failures
    assert (
        "4 requests" in " ".join(page.html.find(id="last-day").text.split())
        or "4" in page.html.find(id="last-day").text
    )
    # Paged, newest first.
    monkeypatch.setattr(signins, "PAGE_SIZE", 3)
    first = app.get("/admin/provisioning")
    assert len(first.html.find(id="requests").find("tbody").find_all("tr")) == 3
    older = app.get(first.html.find(id="older")["href"])
    assert len(older.html.find(id="requests").find("tbody").find_all("tr")) == 1


def test_the_dashboard_says_when_scim_requests_fail(make_app, database_url, idp):
    from saml_support import sign_in

    app = make_app(
        **{"sqlalchemy.url": database_url, "gateway.plugins": "entra sqlstore", "gateway.admin_groups": "Staff"}
    )
    sign_in(app, idp, name="admin@example.com")
    entra = ScimClient(app, make_token(app, "entra"))
    assert "SCIM requests failed" not in app.get("/admin").html.find(id="problems").text
    entra.create_user("alice@example.com")
    for _ in range(2):
        entra.post(
            "/Users",
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com"},
            status=409,
        )
    app.app.registry.provisioning_log.flush()
    problems = app.get("/admin").html.find(id="problems").text
    assert "2 SCIM requests failed in the last hour; most often 409 uniqueness" in " ".join(problems.split())
