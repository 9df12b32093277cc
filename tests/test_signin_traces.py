"""Every refused sign-in becomes a trace the admin finds by the reference the person was shown."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from gateway.db.models import SamlRequest, SeenAssertion, SigninTrace, User, utcnow
from gateway.saml import traces
from saml_support import IDP_ENTITY, post_response, refused, sign_in, start_login


def all_traces(app) -> list:
    with app.app.registry.db_engine.connect() as connection:
        return list(connection.execute(sa.select(SigninTrace).order_by(SigninTrace.at)))


@pytest.fixture
def admin_app(make_app, database_url, idp):
    """An app whose admins are the test IdP's group Staff, and this browser signed in as one."""
    app = make_app(**{"sqlalchemy.url": database_url, "gateway.admin_groups": "Staff"})
    sign_in(app, idp, name="admin@example.com")
    return app


def refusal_reference(response) -> str:
    return response.headers["X-Request-Id"]


def test_a_wrong_identifier_is_found_by_its_reference_with_the_fix(admin_app, make_app, database_url, idp):
    person = make_app(**{"sqlalchemy.url": database_url})
    request_id = start_login(person)
    xml = idp.response(request_id, name_id="bob@example.com", audience="https://old.example.com/saml/metadata")
    page = refused(post_response(person, xml, status=403), "audience")
    reference = refusal_reference(page)

    # The admin pastes the reference: the trace opens, naming Entra's field and the value it needs.
    found = admin_app.get("/admin/signins", {"q": reference}, status=303).follow()
    assert found.request.path.startswith("/admin/signins/")
    fix = found.html.find(id="fix")
    assert "Wrong Identifier (Entity ID)" in fix.text
    assert "Basic SAML Configuration" in fix.text and "http://localhost/saml/metadata" in fix.text
    assert found.html.find(id="trace-reference").text == reference
    assert found.html.find(id="trace-name-id").text == "bob@example.com"
    assert "https://old.example.com/saml/metadata" in found.html.find(id="trace-detail").text
    # The decoded response is kept, its signature value and certificate shortened.
    kept = found.html.find(id="trace-xml").text
    assert "old.example.com" in kept and "<ds:SignatureValue>" in kept
    assert idp.keys.cert_b64 not in kept and idp.keys.cert_b64[:12] in kept and "characters)" in kept


@pytest.mark.parametrize(
    "message, title",
    [
        (
            "AADSTS50105: The signed in user 'bob@example.com' is not assigned to a role for the application.",
            "User not assigned to the application",
        ),
        ("AADSTS50011: The reply URL specified in the request does not match.", "Wrong Reply URL"),
        (
            "AADSTS90072: User account from identity provider does not exist in tenant.",
            "Entra refused the sign-in (AADSTS90072)",
        ),
    ],
)
def test_entras_status_codes_name_their_fix(saml_app, idp, message, title):
    request_id = start_login(saml_app)
    xml = idp.response(
        request_id, status="urn:oasis:names:tc:SAML:2.0:status:Requester", status_message=message, sign_assertion=False
    )
    reference = refusal_reference(refused(post_response(saml_app, xml, status=403), "idp_status"))
    with saml_app.app.registry.dbsession_factory() as dbsession:
        (trace,) = traces.search(dbsession, reference)
    assert trace.issuer == IDP_ENTITY and message in trace.message
    assert traces.fix_for(saml_app.app.registry, trace).title == title


@pytest.mark.parametrize(
    "knobs, reason, title",
    [
        ({"recipient": "https://gateway.example.com/saml/acs"}, "recipient", "Wrong Reply URL"),
        ({"destination": "https://gateway.example.com/saml/acs"}, "destination", "Wrong Reply URL"),
        ({"key": "rollover"}, "signature_invalid", "Signing certificate rolled over or unknown"),
        ({"skew": dt.timedelta(minutes=20)}, "not_yet_valid", "Clock difference"),
    ],
)
def test_each_misconfiguration_names_its_fix(saml_app, idp, knobs, reason, title):
    request_id = start_login(saml_app)
    if "key" in knobs:
        knobs = {"key": idp.rollover}
    if "skew" in knobs:
        knobs = {"now": utcnow() + knobs["skew"]}
    refused(post_response(saml_app, idp.response(request_id, **knobs), status="*"), reason)
    (trace,) = all_traces(saml_app)
    assert trace.reason == reason and trace.kind == "refusal" and trace.outcome == "refused"
    assert traces.fix_for(saml_app.app.registry, trace).title == title


def test_the_trace_survives_the_refusals_rollback(make_app, idp):
    # pyramid_tm's commit veto aborts on every 4xx: what the refused request
    # wrote (its request marked used, its assertion in the replay cache) goes; the trace stays.
    app = make_app(**{"tm.commit_veto": "pyramid_tm.default_commit_veto", "provisioning.mode": "scim"})
    request_id = start_login(app)
    refused(post_response(app, idp.response(request_id), status=403), "denied")
    (trace,) = all_traces(app)
    assert trace.reason == "denied" and "not assigned" in trace.message
    with app.app.registry.db_engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(SeenAssertion)) == 0
        assert connection.scalar(sa.select(SamlRequest.used_at).where(SamlRequest.request_id == request_id)) is None


def test_a_failing_trace_write_never_turns_the_refusal_into_an_error(saml_app, idp, monkeypatch, caplog):
    class Broken:
        def begin(self):
            raise RuntimeError("disk full")

    monkeypatch.setattr(saml_app.app.registry, "db_engine", Broken())
    request_id = start_login(saml_app)
    refused(post_response(saml_app, idp.response(request_id, audience="https://elsewhere/"), status=403), "audience")
    assert "sign-in trace: could not write trace" in caplog.text


def test_responses_are_not_kept_when_switched_off(make_app, idp):
    app = make_app(**{"admin.trace_keep_responses": "false"})
    request_id = start_login(app)
    refused(post_response(app, idp.response(request_id, audience="https://elsewhere/"), status=403), "audience")
    (trace,) = all_traces(app)
    assert trace.response_xml is None and trace.name_id == "alice@example.com" and trace.issuer == IDP_ENTITY


def test_refusals_without_a_saml_message_are_traced_too(saml_app):
    response = saml_app.get("/saml/login", {"next": "https://evil.example.com/"}, status=400)
    (trace,) = all_traces(saml_app)
    assert trace.reason == response.headers["X-Reason"] and trace.path == "/saml/login"
    assert trace.response_xml is None and trace.correlation_id == response.headers["X-Request-Id"]


def test_a_policy_denial_is_traced_on_the_users_page(make_app, database_url, idp):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp, name="carol@example.com")
    with app.app.registry.db_engine.begin() as connection:
        connection.execute(sa.update(User).values(active=False))
        user_id = connection.scalar(sa.select(User.id))
    request_id = start_login(app)
    refused(post_response(app, idp.response(request_id, name_id="carol@example.com"), status=403), "denied")
    (trace,) = all_traces(app)
    assert (trace.user_id, trace.user_name) == (user_id, "carol@example.com")
    with app.app.registry.dbsession_factory() as dbsession:
        assert [t.id for t in traces.traces_for_user(dbsession, user_id)] == [trace.id]


def test_sign_ins_and_refusals_of_the_last_day(make_app, database_url, idp):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp, name="dave@example.com")
    for audience in ("https://a/", "https://b/"):
        refused(post_response(app, idp.response(start_login(app), audience=audience), status=403), "audience")
    refused(post_response(app, idp.response(None), status=400), "unsolicited")
    with app.app.registry.db_engine.begin() as connection:
        # Yesterday's do not count.
        connection.execute(
            sa.update(SigninTrace)
            .where(SigninTrace.reason == "unsolicited")
            .values(at=utcnow() - dt.timedelta(hours=25))
        )
    with app.app.registry.dbsession_factory() as dbsession:
        assert traces.signin_summary(dbsession, utcnow() - dt.timedelta(hours=24)) == (1, [("audience", 2)])


def test_the_traces_page_lists_and_filters(admin_app, idp):
    for audience in ("https://a/", "https://b/"):
        refused(
            post_response(admin_app, idp.response(start_login(admin_app), audience=audience), status=403), "audience"
        )
    page = admin_app.get("/admin/signins")
    rows = page.html.find(id="traces").find("tbody").find_all("tr")
    assert len(rows) == 2 and all("Wrong Identifier" in r.text for r in rows)
    assert admin_app.get("/admin/signins", {"q": "audience"}).html.find(id="traces")
    assert admin_app.get("/admin/signins", {"q": "no-such-reference"}).html.find(id="no-traces")
    assert admin_app.get("/admin/signins", {"kind": "test"}).html.find(id="no-traces")


def test_hostile_values_in_a_trace_render_inert(admin_app, make_app, database_url, idp):
    person = make_app(**{"sqlalchemy.url": database_url})
    hostile = '<script>alert(1)</script>"onmouseover="alert(2)'
    xml = idp.response(start_login(person), name_id=hostile + "@example.com", audience="https://x/" + hostile)
    reference = refusal_reference(refused(post_response(person, xml, status=403), "audience"))
    page = admin_app.get("/admin/signins", {"q": reference}, status=303).follow()
    assert "<script>alert" not in page.text and '"onmouseover="' not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.html.find(id="trace-name-id").text.startswith("<script>")


def test_non_admins_get_403_on_the_sign_in_pages(make_app, database_url, idp):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp, name="eve@example.com")
    for path in ("/admin/signins", "/admin/signins/x", "/admin/provisioning", "/admin/test"):
        app.get(path, status=403)
    for path in ("/admin/test/start", "/admin/test/link"):
        app.post(path, status=403)


def test_a_flood_of_refusals_keeps_its_traces_but_not_every_message(saml_app, idp, monkeypatch):
    monkeypatch.setattr(traces, "_bodies", traces._Budget(2, clock=lambda: 600.0))  # all in one minute
    for _ in range(3):
        refused(
            post_response(saml_app, idp.response(start_login(saml_app), audience="https://x/"), status=403), "audience"
        )
    kept = [t.response_xml is not None for t in all_traces(saml_app)]
    assert kept == [True, True, False]
