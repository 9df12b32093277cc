"""LogoutRequests are single-use and time-bounded when signed, and an unsigned
one arriving by a cross-site GET (a link on any site) cannot end a session."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from gateway.db.models import SsoSession
from saml_support import instant, sign_in

SLO = "/saml/slo?"


def open_sessions(app):
    with app.app.registry.dbsession_factory() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(SsoSession).where(SsoSession.ended_at.is_(None)))


def logout_xml(idp, issued: dt.datetime, not_on_or_after: dt.datetime | None = None, message_id: str = "_slo-1") -> str:
    xml = idp.logout_request_xml("alice@example.com").replace(' ID="', f' ID="{message_id}" x="', 1)
    xml = xml.replace(xml.split('IssueInstant="', 1)[1].split('"', 1)[0], instant(issued), 1)
    if not_on_or_after is not None:
        xml = xml.replace(" IssueInstant=", f' NotOnOrAfter="{instant(not_on_or_after)}" IssueInstant=', 1)
    return xml


def other_browser(app):
    return type(app)(app.app, extra_environ=app.extra_environ)


def test_a_captured_signed_logout_request_is_refused_the_second_time(saml_app, idp):
    sign_in(saml_app, idp)
    query = idp.logout_request("alice@example.com")
    other_browser(saml_app).get(SLO + query, status=303)
    assert open_sessions(saml_app) == 0
    sign_in(saml_app, idp)  # the person signs in again; the captured URL must not end that session
    response = other_browser(saml_app).get(SLO + query, status=403)
    assert response.headers["X-Reason"] == "replay"
    assert open_sessions(saml_app) == 1


@pytest.mark.parametrize(
    ("issued_minutes", "not_on_or_after_minutes", "reason"),
    [
        (-10, None, "expired"),  # no NotOnOrAfter: five minutes from IssueInstant
        (+10, None, "issue_instant"),  # from the future, beyond the clock skew
        (-10, -4, "expired"),
    ],
)
def test_a_stale_or_future_signed_logout_request_is_refused(
    saml_app, idp, issued_minutes, not_on_or_after_minutes, reason
):
    sign_in(saml_app, idp)
    now = dt.datetime.now(dt.UTC)
    later = None if not_on_or_after_minutes is None else now + dt.timedelta(minutes=not_on_or_after_minutes)
    xml = logout_xml(idp, now + dt.timedelta(minutes=issued_minutes), later)
    response = other_browser(saml_app).get(SLO + idp.redirect_query("SAMLRequest", xml), status="*")
    assert response.status_int in (400, 403) and response.headers["X-Reason"] == reason
    assert open_sessions(saml_app) == 1


def test_not_on_or_after_is_honoured_when_the_idp_gives_one(saml_app, idp):
    sign_in(saml_app, idp)
    now = dt.datetime.now(dt.UTC)
    xml = logout_xml(idp, now - dt.timedelta(minutes=10), now + dt.timedelta(minutes=5))
    other_browser(saml_app).get(SLO + idp.redirect_query("SAMLRequest", xml), status=303)
    assert open_sessions(saml_app) == 0


def test_an_unsigned_logout_request_from_another_site_cannot_end_the_session(saml_app, idp):
    sign_in(saml_app, idp)
    for headers in ({}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        page = saml_app.get(SLO + idp.logout_request("alice@example.com", sign=False), headers=headers, status=200)
        assert page.html.find(id="confirm-sign-out") is not None
        assert open_sessions(saml_app) == 1
    # The page's button is the CSRF-checked sign-out.
    page.forms["confirm-sign-out-form"].submit(status=303)
    assert open_sessions(saml_app) == 0


def test_an_unsigned_logout_request_from_the_gateways_own_page_still_works(saml_app, idp):
    sign_in(saml_app, idp)
    query = idp.logout_request("alice@example.com", sign=False)
    saml_app.get(SLO + query, headers={"Sec-Fetch-Site": "same-origin"}, status=303)
    assert open_sessions(saml_app) == 0
