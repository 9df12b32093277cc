"""Single logout: Entra's HTTP-Redirect LogoutRequest (lower-case escapes) and LogoutResponse."""

from __future__ import annotations

import sqlalchemy as sa
from saml_support import _lower_escapes, sign_in

from gateway.db.models import SsoSession


def open_sessions(app):
    with app.app.registry.dbsession_factory() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(SsoSession).where(SsoSession.ended_at.is_(None)))


def test_signed_logout_request_ends_the_sessions_everywhere(saml_app, idp):
    sign_in(saml_app, idp)
    other_browser = type(saml_app)(saml_app.app, extra_environ=saml_app.extra_environ)
    query = idp.logout_request("alice@example.com", relay_state="/bye")
    assert "%2f" in query or "%2b" in query or "%3d" in query  # lower-case escapes, as Entra sends
    response = other_browser.get("/saml/slo?" + query, status=303)
    assert response.headers["Location"].startswith("https://login.microsoftonline.com/")
    assert "SAMLResponse=" in response.headers["Location"] and "RelayState=%2Fbye" in response.headers["Location"]
    assert open_sessions(saml_app) == 0
    saml_app.get("/whoami", status=401)


def test_logout_request_with_session_index_ends_only_that_session(saml_app, idp):
    sign_in(saml_app, idp)
    with saml_app.app.registry.dbsession_factory() as db:
        index = db.scalars(sa.select(SsoSession.session_index)).one()
    other = type(saml_app)(saml_app.app, extra_environ=saml_app.extra_environ)
    other.get("/saml/slo?" + idp.logout_request("alice@example.com", "_not-this-one"), status=303)
    assert open_sessions(saml_app) == 1
    other.get("/saml/slo?" + idp.logout_request("alice@example.com", index), status=303)
    assert open_sessions(saml_app) == 0


def test_logout_request_signed_by_another_key_is_refused(saml_app, idp):
    sign_in(saml_app, idp)
    response = saml_app.get("/saml/slo?" + idp.logout_request("alice@example.com", key=idp.attacker), status=403)
    assert response.headers["X-Reason"] == "signature_invalid"
    assert open_sessions(saml_app) == 1


def test_unsigned_logout_request_only_ends_the_browsers_own_session(saml_app, idp):
    sign_in(saml_app, idp)
    other = type(saml_app)(saml_app.app, extra_environ=saml_app.extra_environ)
    other.get("/saml/slo?" + idp.logout_request("alice@example.com", sign=False), status=303)
    assert open_sessions(saml_app) == 1  # a forged request from elsewhere changes nothing
    saml_app.get("/saml/slo?" + idp.logout_request("alice@example.com", sign=False), status=303)
    assert open_sessions(saml_app) == 0


def test_logout_response_goes_home(saml_app, idp):
    import base64
    import urllib.parse
    import zlib

    xml = (
        '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r" Version="2.0"'
        ' IssueInstant="2026-01-01T00:00:00Z"><Issuer xmlns="urn:oasis:names:tc:SAML:2.0:assertion">'
        "https://login.microsoftonline.com/x/</Issuer><samlp:Status><samlp:StatusCode"
        ' Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:LogoutResponse>'
    )
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    encoded = _lower_escapes(urllib.parse.quote(base64.b64encode(c.compress(xml.encode()) + c.flush()).decode(), safe=""))
    response = saml_app.get("/saml/slo?SAMLResponse=" + encoded, status=303)
    assert response.headers["Location"] == "http://localhost/"


def test_slo_with_nothing_is_a_plain_refusal(saml_app):
    assert saml_app.get("/saml/slo", status=400).headers["X-Reason"] == "missing_message"
