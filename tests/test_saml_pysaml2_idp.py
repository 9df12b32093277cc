"""Responses made by a real pysaml2 IdP (``saml2.server.Server``), not by templates.

pysaml2's IdP is configured with the test IdP's entity id and keys (which the
gateway trusts through its IdP metadata) and with the SP metadata that the
gateway publishes at ``/saml/metadata``. It parses the gateway's real
AuthnRequest from the ``/saml/login`` redirect and answers it with
``create_authn_response``, signed as Entra can be configured to sign:
assertion only (Entra's default, RSA-SHA256), response only, or both.
"""

from __future__ import annotations

import pytest

from gateway.saml.sp import _NoIdentityCache
from saml_support import RSA_SHA1, SHA1, Pysaml2Idp, post_response


def refused(response, code):
    assert response.headers["X-Reason"] == code, response.text
    assert f'<code id="reason">{code}</code>' in response.text
    assert "Traceback" not in response.text
    return response


def test_pysaml2_idp_parses_the_gateways_authn_request(saml_app, pysaml2_idp):
    location = saml_app.get("/saml/login", status=303).headers["Location"]
    request = pysaml2_idp.authn_request(location).message
    assert request.issuer.text == "http://localhost/saml/metadata"
    assert request.assertion_consumer_service_url == "http://localhost/saml/acs"
    assert request.requested_authn_context is None and request.signature is None


def test_assertion_signed_rsa_sha256_as_entra_does_by_default(saml_app, pysaml2_idp):
    response = pysaml2_idp.sign_in(saml_app, "alice@example.com", next_path="/app?x=1")
    assert response.headers["Location"] == "http://localhost/app?x=1"
    me = saml_app.get("/whoami").json
    assert me["userName"] == "alice@example.com"
    assert me["displayName"] == "Alice Example"
    assert me["email"] == "alice@example.com"


def test_what_pysaml2_sent_is_signed_as_asked(saml_app, pysaml2_idp):
    def signatures(**kwargs):
        location = saml_app.get("/saml/login", status=303).headers["Location"]
        xml = pysaml2_idp.answer(location, **kwargs)
        assert "xmldsig-more#rsa-sha256" in xml and "xmlenc#sha256" in xml
        return xml.count("SignatureValue>") // 2

    assert signatures() == 1
    assert signatures(sign_assertion=False, sign_response=True) == 1
    assert signatures(sign_assertion=True, sign_response=True) == 2


@pytest.mark.parametrize("require_signed", ["either", "response"])
def test_response_signed_only(make_app, idp, require_signed):
    app = make_app(**{"saml.require_signed": require_signed})
    pysaml2 = Pysaml2Idp(idp, app.get("/saml/metadata").text)
    pysaml2.sign_in(app, "bob@example.com", sign_assertion=False, sign_response=True)
    assert app.get("/whoami").json["userName"] == "bob@example.com"


@pytest.mark.parametrize("require_signed", ["either", "assertion", "response", "both"])
def test_response_and_assertion_signed(make_app, idp, require_signed):
    app = make_app(**{"saml.require_signed": require_signed})
    pysaml2 = Pysaml2Idp(idp, app.get("/saml/metadata").text)
    pysaml2.sign_in(app, "carol@example.com", sign_assertion=True, sign_response=True)
    assert app.get("/whoami").json["userName"] == "carol@example.com"


def test_assertion_only_is_refused_when_the_response_must_be_signed(make_app, idp):
    app = make_app(**{"saml.require_signed": "both"})
    pysaml2 = Pysaml2Idp(idp, app.get("/saml/metadata").text)
    refused(pysaml2.sign_in(app, status=403), "signature_missing")
    app.get("/whoami", status=401)


def test_pysaml2_response_changed_after_signing_is_refused(saml_app, pysaml2_idp):
    location = saml_app.get("/saml/login", status=303).headers["Location"]
    xml = pysaml2_idp.answer(location, "bob@example.com")
    forged = xml.replace(">bob@example.com</", ">alice@example.com</")
    assert forged != xml
    refused(post_response(saml_app, forged, status=403), "signature_invalid")
    saml_app.get("/whoami", status=401)


def test_pysaml2_response_signed_with_sha1_is_refused_by_default(saml_app, idp):
    pysaml2 = Pysaml2Idp(idp, saml_app.get("/saml/metadata").text, sign_alg=RSA_SHA1, digest_alg=SHA1)
    refused(pysaml2.sign_in(saml_app, status=400), "signature_algorithm")


def test_pysaml2_response_by_a_key_not_in_the_metadata_is_refused(saml_app, idp):
    from saml_support import TestIdp

    impostor = TestIdp(idp.folder, idp.attacker, idp.rollover, idp.attacker)
    pysaml2 = Pysaml2Idp(impostor, saml_app.get("/saml/metadata").text)
    refused(pysaml2.sign_in(saml_app, status=403), "signature_invalid")


# ---------------------------------------------------------------- memory: pysaml2 keeps nothing per person


def client_containers(client) -> dict[str, int]:
    """The size of every dict, list and set that pysaml2's client holds, its caches included."""
    sizes = {name: len(value) for name, value in vars(client).items() if isinstance(value, (dict, list, set))}
    sizes["users"] = len(client.users.subjects())
    sizes["state"] = len(client.state)
    return sizes


def test_many_distinct_users_do_not_grow_pysaml2s_caches(saml_app, pysaml2_idp):
    """pysaml2 stores every person it parses a response for in ``Saml2Client.users`` and
    never forgets them; the gateway's clients keep nothing (sessions live in the database)."""
    provider = saml_app.app.registry.saml_sp
    pysaml2_idp.sign_in(saml_app, "first@example.com")
    (client,) = provider._clients.values()
    assert isinstance(client.users.cache, _NoIdentityCache)
    before = client_containers(client)
    assert before["users"] == 0 and before["state"] == 0

    for number in range(50):
        pysaml2_idp.sign_in(saml_app, f"person{number}@example.com")
        assert saml_app.get("/whoami").json["userName"] == f"person{number}@example.com"

    assert list(provider._clients.values()) == [client]  # no new client either
    assert client_containers(client) == before
    assert client.users.cache._db == {}
