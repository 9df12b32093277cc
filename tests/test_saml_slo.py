"""Single logout: Entra's HTTP-Redirect LogoutRequest (lower-case escapes) and LogoutResponse,
the POST binding's enveloped signatures, and our own signed LogoutRequest.

Every message is really signed: Redirect-binding signatures over the exact
query octets, POST-binding ones by xmlsec1; the LogoutResponse answers the
LogoutRequest that the gateway really sent from ``POST /logout``.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import urllib.parse
import zlib

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from gateway.db.models import SamlRequest, SsoSession
from saml_support import (
    IDP_SSO,
    RSA_SHA1,
    SHA1,
    b64,
    make_keypair,
    post_response,
    refused,
    sign_in,
)

#: Every response here goes through both signature verifiers.
pytestmark = pytest.mark.usefixtures("crypto_backend")


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
    same_origin = {"Sec-Fetch-Site": "same-origin"}  # a cross-site one asks first (test_saml_slo_hardening.py)
    saml_app.get("/saml/slo?" + idp.logout_request("alice@example.com", sign=False), headers=same_origin, status=303)
    assert open_sessions(saml_app) == 0


def test_slo_with_nothing_is_a_plain_refusal(saml_app):
    assert saml_app.get("/saml/slo", status=400).headers["X-Reason"] == "missing_message"


# ---------------------------------------------------------------- helpers


def sign_out(app) -> str:
    """POST /logout (with the CSRF token) in this browser; return the IdP URL it redirects to."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', app.get("/").text).group(1)
    return app.post("/logout", {"csrf_token": token}, status=303).headers["Location"]


def sent_logout_request(location: str) -> tuple[str, str]:
    """(ID, XML) of the LogoutRequest the gateway put in a redirect URL."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    return re.search(r' ID="([^"]+)"', xml).group(1), xml


def signed_out(app, idp) -> str:
    """Sign in, sign out; return the id of the LogoutRequest that the gateway sent."""
    sign_in(app, idp)
    location = sign_out(app)
    assert location.startswith(IDP_SSO + "?SAMLRequest=")
    return sent_logout_request(location)[0]


def logout_rows(app):
    with app.app.registry.dbsession_factory() as db:
        return {r.request_id: r for r in db.scalars(sa.select(SamlRequest).where(SamlRequest.kind == "logout"))}


def another_browser(app):
    return type(app)(app.app, extra_environ=app.extra_environ)


# ---------------------------------------------------------------- LogoutResponse (Redirect, as Entra sends it)


def test_logout_response_to_our_request_completes_the_sign_out(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    assert list(logout_rows(saml_app)) == [request_id]
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id))
    assert "%2f" in query or "%2b" in query or "%3d" in query  # Entra's lower-case escapes, signed as sent
    response = saml_app.get("/saml/slo?" + query, status=303)
    assert response.headers["Location"] == "http://localhost/"
    assert logout_rows(saml_app)[request_id].used_at is not None
    saml_app.get("/whoami", status=401)
    # Used once: the same answer again is refused.
    refused(saml_app.get("/saml/slo?" + query, status=400), "in_response_to_used")


def test_unsigned_logout_response_to_our_request_is_accepted(saml_app, idp):
    """Signatures are checked where present; the binding to this browser is what makes it ours."""
    request_id = signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id), sign=False)
    saml_app.get("/saml/slo?" + query, status=303)


def test_logout_response_with_the_assertion_issuer_is_accepted(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    xml = idp.logout_response_xml(request_id, issuer=idp.entity_id)
    saml_app.get("/saml/slo?" + idp.redirect_query("SAMLResponse", xml), status=303)


def test_logout_response_signed_by_another_key_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id), key=idp.attacker)
    refused(saml_app.get("/saml/slo?" + query, status=403), "signature_invalid")
    assert logout_rows(saml_app)[request_id].used_at is None


def test_logout_response_changed_after_signing_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    signed = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id))
    other = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id, status_message="x"), sign=False)
    forged = other + signed[signed.index("&SigAlg=") :]
    refused(saml_app.get("/saml/slo?" + forged, status=403), "signature_invalid")


def test_logout_response_signed_with_sha1_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id))
    sig_alg = re.search(r"&SigAlg=[^&]+", query).group(0)
    query = query.replace(sig_alg, "&SigAlg=" + urllib.parse.quote(RSA_SHA1, safe=""))
    refused(saml_app.get("/saml/slo?" + query, status=400), "signature_algorithm")


@pytest.mark.parametrize(
    "issuer", ["https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/", "https://evil.example/"]
)
def test_logout_response_from_another_issuer_is_refused(saml_app, idp, issuer):
    request_id = signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id, issuer=issuer))
    refused(saml_app.get("/saml/slo?" + query, status=403), "issuer")
    assert logout_rows(saml_app)[request_id].used_at is None


def test_logout_response_for_another_site_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    xml = idp.logout_response_xml(request_id, destination="https://other.example/saml/slo")
    refused(saml_app.get("/saml/slo?" + idp.redirect_query("SAMLResponse", xml), status=400), "destination")


@pytest.mark.parametrize("in_response_to", [None, "_never-sent"])
def test_logout_response_to_no_request_of_ours_is_refused(saml_app, idp, in_response_to):
    signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(in_response_to))
    refused(saml_app.get("/saml/slo?" + query, status=400), "in_response_to_unknown")


def test_logout_response_answering_an_authn_request_is_refused(saml_app, idp):
    """A sign-in's request id does not complete a sign-out, nor the other way round."""
    from saml_support import start_login

    authn_id = start_login(saml_app)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(authn_id))
    refused(saml_app.get("/saml/slo?" + query, status=400), "in_response_to_unknown")

    logout_id = signed_out(saml_app, idp)
    refused(post_response(saml_app, idp.response(logout_id), status=400), "in_response_to_unknown")


def test_logout_response_in_another_browser_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id))
    refused(another_browser(saml_app).get("/saml/slo?" + query, status=400), "in_response_to_other_browser")
    assert logout_rows(saml_app)[request_id].used_at is None


def test_logout_response_after_the_request_expired_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    with saml_app.app.registry.dbsession_factory() as db, db.begin():
        db.get(SamlRequest, request_id).expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    query = idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id))
    refused(saml_app.get("/saml/slo?" + query, status=400), "in_response_to_expired")


def test_logout_response_with_a_failure_status_shows_it(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    xml = idp.logout_response_xml(
        request_id,
        status="urn:oasis:names:tc:SAML:2.0:status:Responder",
        status_message="AADSTS90000: logout failed",
    )
    response = refused(saml_app.get("/saml/slo?" + idp.redirect_query("SAMLResponse", xml), status=403), "idp_status")
    assert "AADSTS90000: logout failed" in response.text
    saml_app.get("/whoami", status=401)  # signed out here all the same


def test_a_logout_request_is_not_a_logout_response(saml_app, idp):
    signed_out(saml_app, idp)
    query = idp.redirect_query("SAMLResponse", idp.logout_request_xml("alice@example.com"))
    refused(saml_app.get("/saml/slo?" + query, status=400), "not_a_logout_response")


# ---------------------------------------------------------------- POST binding: enveloped signatures


def post_slo(app, kind, xml, status=None, **params):
    return app.post("/saml/slo", {kind: b64(xml), **params}, status=status)


def test_posted_signed_logout_request_ends_the_sessions_everywhere(saml_app, idp):
    sign_in(saml_app, idp)
    xml = idp.post_signed(idp.logout_request_xml("alice@example.com"))
    response = post_slo(another_browser(saml_app), "SAMLRequest", xml, status=303, RelayState="/bye")
    assert "SAMLResponse=" in response.headers["Location"] and "RelayState=%2Fbye" in response.headers["Location"]
    assert open_sessions(saml_app) == 0


def test_posted_logout_request_signed_by_another_key_is_refused(saml_app, idp):
    sign_in(saml_app, idp)
    xml = idp.post_signed(idp.logout_request_xml("alice@example.com"), key=idp.attacker)
    refused(post_slo(saml_app, "SAMLRequest", xml, status=403), "signature_invalid")
    assert open_sessions(saml_app) == 1


def test_posted_logout_request_changed_after_signing_is_refused(saml_app, idp):
    sign_in(saml_app, idp)
    sign_in(another_browser(saml_app), idp, "bob@example.com")
    xml = idp.post_signed(idp.logout_request_xml("bob@example.com"))
    forged = xml.replace("<NameID>bob@example.com</NameID>", "<NameID>alice@example.com</NameID>")
    assert forged != xml
    refused(post_slo(another_browser(saml_app), "SAMLRequest", forged, status=403), "signature_invalid")
    assert open_sessions(saml_app) == 2


def test_posted_logout_request_with_a_wrapped_signature_is_refused(saml_app, idp):
    """A signed request hidden inside an unsigned one: the signature must cover the root."""
    sign_in(saml_app, idp)
    signed = idp.post_signed(idp.logout_request_xml("bob@example.com"))
    outer = idp.logout_request_xml("alice@example.com")
    wrapped = outer.replace(
        "</samlp:LogoutRequest>", "<samlp:Extensions>" + signed + "</samlp:Extensions></samlp:LogoutRequest>"
    )
    refused(post_slo(another_browser(saml_app), "SAMLRequest", wrapped, status=400), "signature_location")
    assert open_sessions(saml_app) == 1


def test_posted_logout_request_signed_with_sha1_is_refused(saml_app, idp):
    sign_in(saml_app, idp)
    xml = idp.post_signed(idp.logout_request_xml("alice@example.com"), sign_alg=RSA_SHA1, digest_alg=SHA1)
    refused(post_slo(another_browser(saml_app), "SAMLRequest", xml, status=400), "signature_algorithm")
    assert open_sessions(saml_app) == 1


def test_posted_unsigned_logout_request_only_ends_the_browsers_own_session(saml_app, idp):
    sign_in(saml_app, idp)
    xml = idp.logout_request_xml("alice@example.com")
    post_slo(another_browser(saml_app), "SAMLRequest", xml, status=303)
    assert open_sessions(saml_app) == 1
    post_slo(saml_app, "SAMLRequest", xml, status=303)
    assert open_sessions(saml_app) == 0


def test_posted_signed_logout_response_completes_the_sign_out(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    xml = idp.post_signed(idp.logout_response_xml(request_id))
    assert post_slo(saml_app, "SAMLResponse", xml, status=303).headers["Location"] == "http://localhost/"
    assert logout_rows(saml_app)[request_id].used_at is not None


def test_posted_logout_response_signed_by_another_key_is_refused(saml_app, idp):
    request_id = signed_out(saml_app, idp)
    xml = idp.post_signed(idp.logout_response_xml(request_id), key=idp.attacker)
    refused(post_slo(saml_app, "SAMLResponse", xml, status=403), "signature_invalid")
    assert logout_rows(saml_app)[request_id].used_at is None


# ---------------------------------------------------------------- our own messages, signed with saml.key_file


@pytest.fixture
def sp_keys(tmp_path):
    return make_keypair(tmp_path, "sp", common_name="Gateway SP")


def published_certificate(app) -> x509.Certificate:
    metadata = app.get("/saml/metadata").text
    found = re.findall(r"<(?:\w+:)?X509Certificate>([^<]+)</", metadata)
    assert len(found) == 1, metadata
    return x509.load_der_x509_certificate(base64.b64decode("".join(found[0].split())))


def verify_redirect(location: str, kind: str, cert: x509.Certificate) -> bytes:
    """Check a Redirect-binding signature over the raw query octets (SAML bindings 3.4.4.1); return the XML."""
    raw = dict(part.split("=", 1) for part in urllib.parse.urlsplit(location).query.split("&"))
    assert urllib.parse.unquote(raw["SigAlg"]) == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    octets = f"{kind}={raw[kind]}" + (f"&RelayState={raw['RelayState']}" if "RelayState" in raw else "")
    octets += f"&SigAlg={raw['SigAlg']}"
    signature = base64.b64decode(urllib.parse.unquote(raw["Signature"]))
    cert.public_key().verify(signature, octets.encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):  # and it covers the message
        cert.public_key().verify(
            signature, octets.replace(kind + "=", kind + "=A", 1).encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    return zlib.decompress(base64.b64decode(urllib.parse.unquote(raw[kind])), -15)


def test_our_logout_request_is_signed_with_the_published_certificate(make_app, idp, sp_keys):
    app = make_app(**{"saml.key_file": sp_keys.key_file, "saml.cert_file": sp_keys.cert_file})
    cert = published_certificate(app)
    assert base64.b64encode(cert.public_bytes(serialization_der())).decode() == sp_keys.cert_b64
    sign_in(app, idp)
    location = sign_out(app)
    xml = verify_redirect(location, "SAMLRequest", cert)
    assert b"<samlp:LogoutRequest" in xml and b">alice@example.com</saml:NameID>" in xml
    # The IdP's answer to it completes the sign-out.
    request_id = sent_logout_request(location)[0]
    app.get("/saml/slo?" + idp.redirect_query("SAMLResponse", idp.logout_response_xml(request_id)), status=303)


def test_our_logout_response_is_signed_with_the_published_certificate(make_app, idp, sp_keys):
    app = make_app(**{"saml.key_file": sp_keys.key_file, "saml.cert_file": sp_keys.cert_file})
    location = app.get("/saml/slo?" + idp.logout_request("alice@example.com", relay_state="/x"), status=303).headers[
        "Location"
    ]
    xml = verify_redirect(location, "SAMLResponse", published_certificate(app))
    assert b"<samlp:LogoutResponse" in xml


def test_without_a_key_nothing_is_signed_and_no_certificate_is_published(saml_app, idp):
    metadata = saml_app.get("/saml/metadata").text
    assert "X509Certificate" not in metadata and "KeyDescriptor" not in metadata
    sign_in(saml_app, idp)
    location = sign_out(saml_app)
    assert "Signature=" not in location and "SigAlg=" not in location


def test_authn_requests_stay_unsigned_with_a_key(make_app, sp_keys):
    """Entra accepts unsigned AuthnRequests; a signed one would break its IdP-initiated flows."""
    app = make_app(**{"saml.key_file": sp_keys.key_file, "saml.cert_file": sp_keys.cert_file})
    location = app.get("/saml/login", status=303).headers["Location"]
    assert "Signature=" not in location and "SigAlg=" not in location
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert b"Signature" not in zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
    metadata = app.get("/saml/metadata").text
    assert 'AuthnRequestsSigned="false"' in metadata
    assert re.search(r'<(?:\w+:)?KeyDescriptor use="signing"', metadata)


def serialization_der():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER
