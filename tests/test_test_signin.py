"""Test sign-ins: through the IdP and back to a report; nobody is created, changed or signed in."""

from __future__ import annotations

import base64
import urllib.parse
import zlib

import pytest
import sqlalchemy as sa

from gateway.db.models import AuditEvent, SeenAssertion, SigninTest, SigninTrace, SsoSession, User
from saml_support import authn_request_id, post_response, sign_in


@pytest.fixture
def admin_app(make_app, database_url, idp):
    app = make_app(**{"sqlalchemy.url": database_url, "gateway.admin_groups": "Staff"})
    sign_in(app, idp, name="admin@example.com")
    return app


def csrf(app) -> str:
    return app.get("/admin/test").html.find("input", attrs={"name": "csrf_token"})["value"]


def counts(app) -> tuple:
    with app.app.registry.db_engine.connect() as connection:
        return tuple(
            connection.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (User, SsoSession, SeenAssertion)
        )


def users(app) -> list:
    with app.app.registry.db_engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(User).order_by(User.id))]


def bob(idp) -> dict:
    """Claims of a person the gateway does not know (an object id of his own)."""
    return idp.claims("bob@example.com", oid="b0b00000-0000-4000-8000-000000000b0b")


def start_test(app) -> str:
    """Press "Start test sign-in"; the IdP URL it sends the browser to."""
    response = app.post("/admin/test/start", {"csrf_token": csrf(app), "back": "/admin/test"}, status=303)
    return response.headers["Location"]


def authn_request_xml(location: str) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    return zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()


def test_a_test_sign_in_shows_the_report_and_changes_nothing(admin_app, idp):
    before_users, before = users(admin_app), counts(admin_app)
    location = start_test(admin_app)
    assert 'ForceAuthn="true"' in authn_request_xml(location)
    # Someone not stored yet signs in at the IdP: first_login mode would create them.
    xml = idp.response(authn_request_id(location), name_id="bob@example.com", attributes=bob(idp))
    answer = post_response(admin_app, xml, status=303)
    assert answer.headers["Location"].startswith("http://localhost/admin/signins/")
    assert "gateway_session=" not in answer.headers.get("Set-Cookie", "")
    report = admin_app.get(answer.headers["Location"])
    assert "Passed: a sign-in with this response would be accepted." in report.html.find(id="verdict").text
    checks = {row["id"]: row for row in report.html.find(id="checks").find_all("tr", id=True)}
    for key in (
        "check-signature",
        "check-issuer",
        "check-audience",
        "check-recipient",
        "check-destination",
        "check-time",
        "check-in_response_to",
        "check-replay",
        "check-algorithms",
        "check-verification",
    ):
        assert "Passed" in checks[key].text, key
    assert "verified with certificate" in checks["check-signature"].text
    assert "RSA-SHA256 with a SHA256 digest" in checks["check-algorithms"].text
    claims = report.html.find(id="claims").text
    assert "http://schemas.microsoft.com/identity/claims/objectidentifier" in claims and "bob@example.com" in claims
    assert "Staff" in report.html.find(id="identity").text
    assert "claims mapped and merged" in report.html.find(id="transforms").text
    assert report.html.find(id="matched-user-none")
    assert "Create the user" in report.html.find(id="decision").text
    # Nothing was created, changed or signed in: the admin is still the admin.
    assert users(admin_app) == before_users and counts(admin_app) == before
    assert admin_app.get("/whoami").json["userName"] == "admin@example.com"
    with admin_app.app.registry.db_engine.connect() as connection:
        actions = connection.scalars(sa.select(AuditEvent.action)).all()
        assert "admin.test_signin.start" in actions and "user.signed_in" not in actions[-1:]


def test_a_known_user_is_matched_by_its_key(admin_app, idp):
    location = start_test(admin_app)
    report = admin_app.get(
        post_response(
            admin_app, idp.response(authn_request_id(location), name_id="admin@example.com"), status=303
        ).headers["Location"]
    )
    assert report.html.find(id="matched-user").text == "admin@example.com"
    assert "by subject" in report.html.find(id="match").text.replace("\n", " ") or "subject" in report.text
    assert "Sign in" in report.html.find(id="decision").text


def test_a_failing_response_gets_the_report_with_the_failing_check_and_the_fix(admin_app, idp):
    location = start_test(admin_app)
    xml = idp.response(authn_request_id(location), audience="https://old.example.com/", key=idp.rollover)
    report = admin_app.get(post_response(admin_app, xml, status=303).headers["Location"])
    assert "would be refused" in report.html.find(id="verdict").text
    signature = report.html.find(id="check-signature")
    assert "check-fail" in signature["class"] and "Signing certificate rolled over" in signature.text
    audience = report.html.find(id="check-audience")
    assert "check-fail" in audience["class"] and "Wrong Identifier" in audience.text
    assert "http://localhost/saml/metadata" in audience.text
    assert "Passed" in report.html.find(id="check-recipient").text
    # The claims are shown, marked as not verified.
    assert "not verified" in report.text and report.html.find(id="claims")
    assert report.html.find(id="fix")


def test_a_test_answer_can_neither_be_replayed_nor_sign_anyone_in(admin_app, idp):
    location = start_test(admin_app)
    xml = idp.response(authn_request_id(location), name_id="bob@example.com", attributes=bob(idp))
    post_response(admin_app, xml, status=303)
    before = counts(admin_app)
    second = admin_app.get(post_response(admin_app, xml, status=303).headers["Location"])
    assert "in_response_to_used" in second.html.find(id="check-browser").text
    assert counts(admin_app) == before


def test_a_test_link_works_once_and_the_report_reaches_the_admin(admin_app, make_app, database_url, idp):
    page = admin_app.post("/admin/test/link", {"csrf_token": csrf(admin_app), "back": "/admin/test"})
    link = page.html.find(id="test-link").text
    assert link.startswith("http://localhost/saml/test/")
    path = urllib.parse.urlsplit(link).path
    assert admin_app.get("/admin/test").html.find(id="open-links")
    assert admin_app.get("/admin/test").html.find(id="test-link") is None  # shown once

    tester = make_app(**{"sqlalchemy.url": database_url})
    assert tester.get(path).html.find(id="start-test-link")
    location = tester.post(path, status=303).headers["Location"]
    assert 'ForceAuthn="true"' in authn_request_xml(location)
    claims = idp.claims("tester@example.com", oid="7e57e700-0000-4000-8000-00000007e57e")
    thanks = post_response(
        tester, idp.response(authn_request_id(location), name_id="tester@example.com", attributes=claims), status=200
    )
    assert thanks.html.find(id="thanks") and "tester@example.com" not in thanks.text
    assert tester.get("/whoami", status=401)
    # Used up.
    assert tester.get(path, status=410).html.find(id="link-unusable")
    tester.post(path, status=410)

    recent = admin_app.get("/admin/test").html.find(id="recent-tests").text
    assert "tester@example.com" in recent and "admin:admin@example.com" in recent
    with admin_app.app.registry.db_engine.connect() as connection:
        test = connection.execute(sa.select(SigninTest).where(SigninTest.link_hash.is_not(None))).one()
        trace = connection.execute(sa.select(SigninTrace).where(SigninTrace.id == test.trace_id)).one()
    assert trace.kind == "test" and trace.outcome == "passed" and trace.started_by == "admin:admin@example.com"


def test_an_expired_or_unknown_link_is_refused(admin_app, make_app, database_url):
    page = admin_app.post("/admin/test/link", {"csrf_token": csrf(admin_app), "back": "/admin/test"})
    path = urllib.parse.urlsplit(page.html.find(id="test-link").text).path
    with admin_app.app.registry.db_engine.begin() as connection:
        connection.execute(sa.update(SigninTest).values(expires_at=SigninTest.created_at))
    tester = make_app(**{"sqlalchemy.url": database_url})
    tester.get(path, status=410)
    tester.post(path, status=410)
    tester.get("/saml/test/" + "x" * 43, status=410)


def test_hostile_claims_render_inert_in_the_report(admin_app, idp):
    hostile = '<script>alert(1)</script>"onmouseover="alert(2)'
    claims = idp.claims("mallory@example.com")
    claims["http://schemas.microsoft.com/identity/claims/displayname"] = [hostile]
    claims["http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"] = [hostile]
    claims[hostile] = [hostile]
    location = start_test(admin_app)
    xml = idp.response(authn_request_id(location), name_id="mallory@example.com", attributes=claims)
    report = admin_app.get(post_response(admin_app, xml, status=303).headers["Location"])
    assert "<script>alert" not in report.text and '"onmouseover="' not in report.text
    assert report.text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3


def test_only_admins_start_tests(make_app, database_url, idp):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp, name="eve@example.com")
    app.post("/admin/test/start", status=403)


def test_a_report_that_cannot_be_finished_is_still_a_report(admin_app, idp, monkeypatch):
    from gateway.saml import testsignin

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(testsignin, "diagnose", broken)
    location = start_test(admin_app)
    report = admin_app.get(
        post_response(admin_app, idp.response(authn_request_id(location)), status=303).headers["Location"]
    )
    assert "report_failed" in report.html.find(id="verdict").text
    assert "could not finish this report" in report.text or "could not be finished" in report.text


def test_each_transform_is_shown_in_order_with_what_it_changed(make_app, database_url, idp):
    app = make_app(
        **{
            "sqlalchemy.url": database_url,
            "gateway.admin_groups": "Staff",
            "gateway.plugins": "entra transforms",
            "attributes.transforms": "lowercase_email compose_display_name",
        }
    )
    sign_in(app, idp, name="admin@example.com")
    location = start_test(app)
    claims = bob(idp)
    claims["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"] = ["Bob.Builder@Example.COM"]
    report = app.get(
        post_response(
            app, idp.response(authn_request_id(location), name_id="bob@example.com", attributes=claims), status=303
        ).headers["Location"]
    )
    steps = [
        " ".join(li.get_text(" ", strip=True).split("{")[0].split())
        for li in report.html.find(id="transforms").find_all("li")
    ]
    assert steps[0] == "claims mapped and merged"
    assert steps[1] == "lowercase_email : changed email"
    assert steps[2] == "compose_display_name : no change"  # Entra sent a display name
    assert '"email": "bob.builder@example.com"' in report.html.find(id="transforms").text
