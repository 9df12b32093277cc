"""SAML test support: the fixtures on top of the kit's test IdP (gateway.testing.saml).

The IdP itself (keys, Entra-shaped signed responses, logout messages,
pysaml2's own IdP) moved to :mod:`gateway.testing.saml`; its names stay
importable from here.
"""

from __future__ import annotations

import pytest

from gateway.testing.saml import (  # noqa: F401 - names the tests import from here
    ACS,
    BASE,
    BEARER,
    ENTRA_LOGOUT_ISSUER,
    EXC_C14N,
    GROUPS,
    IDP_ENTITY,
    IDP_SSO,
    MICROSOFT,
    RSA_SHA1,
    RSA_SHA256,
    SAML,
    SAMLP,
    SHA1,
    SHA256,
    SLO,
    SP_ENTITY,
    STATUS_SUCCESS,
    TENANT,
    XMLSOAP,
    KeyPair,
    Pysaml2Idp,
    TestIdp,
    _lower_escapes,
    authn_request_id,
    b64,
    instant,
    make_keypair,
    new_id,
    post_response,
    sign_in,
    sign_in_as,
    signature_template,
    start_login,
    write_test_metadata,
)

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def idp(gateway_idp):
    return gateway_idp


@pytest.fixture(scope="session")
def idp_keys(idp):
    return idp.folder, idp.keys, idp.rollover, idp.attacker


@pytest.fixture(scope="session")
def idp_metadata_file(gateway_idp_metadata):
    return gateway_idp_metadata


@pytest.fixture(autouse=True)
def _idp_metadata_in_base_settings(request):
    """Every app the tests build trusts the test IdP unless a test says otherwise.

    The SAML SP refuses to start without IdP metadata, so the shared
    ``base_settings`` gets ``saml.idp_metadata``; a test removes it with
    ``make_app(**{"saml.idp_metadata": None})``.
    """
    if "base_settings" in request.fixturenames:
        request.getfixturevalue("base_settings").setdefault(
            "saml.idp_metadata", request.getfixturevalue("idp_metadata_file")
        )


@pytest.fixture(params=["inprocess", "xmlsec1"])
def crypto_backend(request, base_settings):
    """Run a test once per signature verifier (``saml.crypto_backend``): both must refuse the same."""
    base_settings["saml.crypto_backend"] = request.param
    return request.param


@pytest.fixture
def saml_app(make_app):
    """An app on this test's SQLite copy, trusting the test IdP."""
    return make_app()


@pytest.fixture
def pysaml2_idp(saml_app, idp):
    """pysaml2's IdP, trusting the SP metadata that ``saml_app`` publishes."""
    return Pysaml2Idp(idp, saml_app.get("/saml/metadata").text)


def refused(response, code, status=None):
    """The refusal page names the reason and a correlation id, and never leaks a traceback."""
    assert response.headers["X-Reason"] == code, response.text
    if status is not None:
        assert response.status_int == status
    assert f'<code id="reason">{code}</code>' in response.text
    assert response.headers["X-Request-Id"] in response.text
    assert "Traceback" not in response.text
    assert "gateway_session=" not in response.headers.get("Set-Cookie", "")
    return response
