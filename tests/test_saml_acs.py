"""POST /saml/acs: what is accepted, and one test per refusal, each with a real signed response."""

from __future__ import annotations

import base64
import datetime as dt
import re
import urllib.parse
import zlib

import pytest
import sqlalchemy as sa

from gateway.db.models import SeenAssertion, User
from saml_support import (
    ACS,
    RSA_SHA1,
    SHA1,
    SP_ENTITY,
    b64,
    new_id,
    post_response,
    refused,
    sign_in,
    start_login,
)

#: Every response here goes through both signature verifiers.
pytestmark = pytest.mark.usefixtures("crypto_backend")


def signed_in_as(app):
    return app.get("/whoami").json["userName"]


# ---------------------------------------------------------------- accepted


def test_authn_request_is_entra_friendly(saml_app):
    response = saml_app.get("/saml/login", status=303)
    location = response.headers["Location"]
    assert location.startswith("https://login.microsoftonline.com/")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    assert "RequestedAuthnContext" not in xml  # AADSTS75011 for MFA users
    assert f">{SP_ENTITY}</" in xml and ACS in xml
    # The binding cookie is the request's own, and its name does not give the request id away.
    (binding,) = [c for c in response.headers.getall("Set-Cookie") if c.startswith("gateway_session_saml_")]
    request_id = re.search(r' ID="([^"]+)"', xml).group(1)
    assert request_id not in binding and "Path=/saml/" in binding and "HttpOnly" in binding


def test_default_entra_shape_assertion_signed_only(saml_app, idp):
    response = sign_in(saml_app, idp, next_path="/after?x=1")
    assert response.headers["Location"] == "http://localhost/after?x=1"
    assert signed_in_as(saml_app) == "alice@example.com"
    who = saml_app.get("/whoami").json
    assert who["displayName"] == "Alice Example"
    user = saml_app.app.registry.dbsession_factory().scalars(sa.select(User)).one()
    assert user.idp_subject == "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a" and user.provisioned_by == "saml"


def test_response_only_signed_is_accepted(saml_app, idp):
    sign_in(saml_app, idp, sign_assertion=False, sign_response=True)
    assert signed_in_as(saml_app) == "alice@example.com"


def test_both_signed_is_accepted(make_app, idp):
    app = make_app(**{"saml.require_signed": "both"})
    sign_in(app, idp, sign_assertion=True, sign_response=True)
    assert signed_in_as(app) == "alice@example.com"


def test_spn_prefixed_audience_is_accepted(saml_app, idp):
    sign_in(saml_app, idp, audience="spn:" + SP_ENTITY)
    assert signed_in_as(saml_app) == "alice@example.com"


def test_clock_skew_is_tolerated(saml_app, idp):
    # The IdP's clock runs 2 minutes ahead: NotBefore is in our future, within 180 s.
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    sign_in(saml_app, idp, not_before=ahead)
    assert signed_in_as(saml_app) == "alice@example.com"


def test_rollover_certificate_in_metadata_is_accepted(make_app, idp):
    metadata = idp.write_metadata("two-certs.xml", certs=[idp.keys, idp.rollover])
    app = make_app(**{"saml.idp_metadata": metadata})
    sign_in(app, idp, key=idp.rollover)
    assert signed_in_as(app) == "alice@example.com"


def test_idp_initiated_when_allowed(make_app, idp):
    app = make_app(**{"saml.allow_idp_initiated": "true"})
    response = post_response(app, idp.response(None), relay_state="/welcome", status=303)
    assert response.headers["Location"] == "http://localhost/welcome"
    assert signed_in_as(app) == "alice@example.com"


# ---------------------------------------------------------------- signatures


def test_unsigned_response_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    refused(post_response(saml_app, idp.response(request_id, sign_assertion=False), status=403), "signature_missing")


def test_assertion_signature_required_when_configured(make_app, idp):
    app = make_app(**{"saml.require_signed": "assertion"})
    request_id = start_login(app)
    xml = idp.response(request_id, sign_assertion=False, sign_response=True)
    refused(post_response(app, xml, status=403), "signature_missing")


def test_response_signature_required_when_configured(make_app, idp):
    app = make_app(**{"saml.require_signed": "response"})
    request_id = start_login(app)
    refused(post_response(app, idp.response(request_id), status=403), "signature_missing")


def test_key_not_in_metadata_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    refused(post_response(saml_app, idp.response(request_id, key=idp.attacker), status=403), "signature_invalid")


def test_rollover_key_is_refused_when_metadata_lists_only_the_first(saml_app, idp):
    request_id = start_login(saml_app)
    refused(post_response(saml_app, idp.response(request_id, key=idp.rollover), status=403), "signature_invalid")


@pytest.mark.parametrize(
    "before, after",
    [
        ("<AttributeValue>Alice Example</AttributeValue>", "<AttributeValue>Mallory Example</AttributeValue>"),
        (">alice@example.com</NameID>", ">admin@example.com</NameID>"),
        ("<AttributeValue>Staff</AttributeValue>", "<AttributeValue>Gateway Admins</AttributeValue>"),
    ],
    ids=["attribute", "nameid", "groups"],
)
def test_any_change_after_signing_is_refused(saml_app, idp, before, after):
    request_id = start_login(saml_app)
    xml = idp.response(request_id)
    assert before in xml
    tampered = xml.replace(before, after, 1)
    refused(post_response(saml_app, tampered, status=403), "signature_invalid")
    saml_app.get("/whoami", status=401)


def test_changed_validity_window_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id)
    start = xml.index('<Conditions NotBefore="')
    end = xml.index('"', xml.index('NotOnOrAfter="', start) + len('NotOnOrAfter="'))
    tampered = xml[:start] + xml[start:end].rsplit('"', 1)[0] + '"2099-01-01T00:00:00Z' + xml[end:]
    refused(post_response(saml_app, tampered, status=403), "signature_invalid")


def test_sha1_is_refused_by_default(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, sign_alg=RSA_SHA1, digest_alg=SHA1)
    refused(post_response(saml_app, xml, status=400), "signature_algorithm")


def test_sha1_accepted_when_allowed(make_app, idp):
    app = make_app(**{"saml.allowed_signature_algorithms": "rsa-sha1 rsa-sha256"})
    sign_in(app, idp, sign_alg=RSA_SHA1, digest_alg=SHA1)
    assert signed_in_as(app) == "alice@example.com"


def test_weak_digest_with_strong_signature_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, digest_alg=SHA1)
    refused(post_response(saml_app, xml, status=400), "digest_algorithm")


# ---------------------------------------------------------------- signature wrapping


def _split(xml):
    """(response head up to the assertion, the signed assertion, the tail)."""
    start = xml.index("<Assertion ")
    end = xml.index("</Assertion>") + len("</Assertion>")
    return xml[:start], xml[start:end], xml[end:]


def test_wrapping_second_assertion_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    head, good, tail = _split(idp.response(request_id))
    evil = good.replace("alice@example.com", "mallory@example.com").replace(' ID="', ' ID="x', 1)
    refused(post_response(saml_app, head + evil + good + tail, status=400), "multiple_assertions")


def test_wrapping_signed_assertion_hidden_in_extensions_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    head, good, tail = _split(idp.response(request_id))
    evil = _split(idp.response(request_id, name_id="mallory@example.com", sign_assertion=False))[1]
    wrapped = head.replace("<samlp:Status>", f"<samlp:Extensions>{good}</samlp:Extensions><samlp:Status>") + evil + tail
    refused(post_response(saml_app, wrapped, status=400), "multiple_assertions")


def test_wrapping_same_id_twice_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    head, good, tail = _split(idp.response(request_id))
    signature_start = good.index("<ds:Signature")
    signature_end = good.index("</ds:Signature>") + len("</ds:Signature>")
    # The evil assertion reuses the good one's ID and carries its signature,
    # which now points at a copy hidden inside the signature's Object.
    evil = (
        good[:signature_start]
        + good[signature_start:signature_end].replace(
            "</ds:Signature>", f"<ds:Object>{good}</ds:Object></ds:Signature>"
        )
        + good[signature_end:]
    ).replace("alice@example.com", "mallory@example.com")
    response = post_response(saml_app, head + evil + tail, status=400)
    assert response.headers["X-Reason"] in ("duplicate_id", "multiple_assertions")


def test_assertion_outside_the_response_root_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    head, good, tail = _split(idp.response(request_id))
    moved = head.replace("<samlp:Status>", f"<samlp:Extensions>{good}</samlp:Extensions><samlp:Status>") + tail
    refused(post_response(saml_app, moved, status=400), "assertion_location")


def test_signature_referencing_another_element_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, sign_assertion=False, sign_response=True)
    # Move the response's signature into the (unsigned) assertion.
    signature_start = xml.index("<ds:Signature")
    signature_end = xml.index("</ds:Signature>") + len("</ds:Signature>")
    signature = xml[signature_start:signature_end]
    xml = xml[:signature_start] + xml[signature_end:]
    head, assertion, tail = _split(xml)
    issuer_end = assertion.index("</Issuer>") + len("</Issuer>")
    assertion = assertion[:issuer_end] + signature + assertion[issuer_end:]
    refused(post_response(saml_app, head + assertion + tail, status=400), "signature_reference")


# ---------------------------------------------------------------- XML tricks


def test_comment_injection_in_nameid_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    # Signed as "alice@example.com.evil.example"; the comment is outside c14n,
    # so the signature still verifies: only the refusal keeps Alice safe.
    xml = idp.response(request_id, name_id="alice@example.com.evil.example")
    injected = xml.replace(
        ">alice@example.com.evil.example</NameID>", ">alice@example.com<!---->.evil.example</NameID>"
    )
    assert injected != xml
    refused(post_response(saml_app, injected, status=400), "xml_comment")


def test_comment_injection_in_attribute_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id)
    injected = xml.replace("<AttributeValue>709cd037", "<AttributeValue>709cd037<!---->", 1)
    refused(post_response(saml_app, injected, status=400), "xml_comment")


def test_dtd_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id)
    with_dtd = '<!DOCTYPE r [<!ENTITY e "alice@example.com">]>' + xml
    refused(post_response(saml_app, with_dtd, status=400), "xml_dtd")


def test_external_entity_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id).replace("alice@example.com</NameID>", "&xxe;</NameID>")
    with_xxe = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' + xml
    refused(post_response(saml_app, with_xxe, status=400), "xml_dtd")


def test_entity_expansion_bomb_is_refused(saml_app, idp):
    bomb = '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>'
    refused(post_response(saml_app, bomb, status=400), "xml_dtd")


def test_undeclared_entity_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id).replace("alice@example.com</NameID>", "&alice;</NameID>")
    response = post_response(saml_app, xml, status=400)
    assert response.headers["X-Reason"] in ("xml_entity", "malformed")


def test_garbage_is_refused_without_traceback(saml_app):
    refused(saml_app.post("/saml/acs", {"SAMLResponse": "%%%not base64"}, status=400), "malformed")
    refused(saml_app.post("/saml/acs", {"SAMLResponse": b64("<nope")}, status=400), "malformed")
    refused(saml_app.post("/saml/acs", {}, status=400), "missing_response")


# ---------------------------------------------------------------- conditions


def test_expired_assertion_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    refused(post_response(saml_app, idp.response(request_id, now=past), status=400), "expired")


def test_not_yet_valid_beyond_skew_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    refused(post_response(saml_app, idp.response(request_id, not_before=ahead), status=400), "not_yet_valid")


def test_subject_confirmation_expired_beyond_skew_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    refused(post_response(saml_app, idp.response(request_id, sc_not_on_or_after=past), status=400), "expired")


def test_subject_confirmation_within_skew_is_accepted(saml_app, idp):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    sign_in(saml_app, idp, sc_not_on_or_after=past)
    assert signed_in_as(saml_app) == "alice@example.com"


def test_non_bearer_subject_confirmation_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, method="urn:oasis:names:tc:SAML:2.0:cm:sender-vouches")
    refused(post_response(saml_app, xml, status=400), "subject_confirmation_method")


def test_wrong_audience_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, audience="https://other.example.com/saml/metadata")
    refused(post_response(saml_app, xml, status=403), "audience")


def test_wrong_recipient_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, recipient="https://other.example.com/saml/acs")
    refused(post_response(saml_app, xml, status=400), "recipient")


def test_wrong_destination_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, destination="https://other.example.com/saml/acs")
    refused(post_response(saml_app, xml, status=400), "destination")


def test_other_issuer_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, issuer="https://sts.windows.net/00000000-0000-0000-0000-000000000000/")
    refused(post_response(saml_app, xml, status=403), "issuer")


def test_non_success_status_shows_entra_message(saml_app, idp):
    request_id = start_login(saml_app)
    message = "AADSTS50105: Your administrator has configured the application to block users unless assigned."
    xml = idp.response(
        request_id, status="urn:oasis:names:tc:SAML:2.0:status:Requester", status_message=message, sign_assertion=False
    )
    response = refused(post_response(saml_app, xml, status=403), "idp_status")
    assert "AADSTS50105" in response.text


# ---------------------------------------------------------------- InResponseTo and replay


def test_unknown_in_response_to_is_refused(saml_app, idp):
    start_login(saml_app)
    refused(post_response(saml_app, idp.response(new_id()), status=400), "in_response_to_unknown")


def test_in_response_to_used_twice_is_refused(saml_app, idp):
    request_id = start_login(saml_app)
    post_response(saml_app, idp.response(request_id), status=303)
    refused(post_response(saml_app, idp.response(request_id), status=400), "in_response_to_used")


def test_in_response_to_of_another_browser_is_refused(make_app, idp):
    app = make_app()
    victim = type(app)(app.app, extra_environ=app.extra_environ)
    request_id = start_login(victim)
    start_login(app)  # the attacker has a binding cookie of their own
    refused(post_response(app, idp.response(request_id), status=400), "in_response_to_other_browser")
    # The victim can still complete their own sign-in.
    post_response(victim, idp.response(request_id), status=303)


def test_sign_ins_started_at_once_in_one_browser_each_complete(saml_app, idp):
    """A page whose session ended sends its parallel requests (a favicon, XHRs) to sign in at once,
    before any binding cookie is set: whichever answer the browser stores last, every one of those
    sign-ins still completes in this browser (one shared cookie let the last replace the others)."""
    first = start_login(saml_app)
    first_cookies = dict(saml_app.cookies)
    saml_app.reset()  # the second request went out before the first one's answer came back
    second = start_login(saml_app)
    for name, value in first_cookies.items():  # ...and the first one's answer arrives last
        saml_app.set_cookie(name, value)
    post_response(saml_app, idp.response(second), status=303)
    assert signed_in_as(saml_app) == "alice@example.com"
    post_response(saml_app, idp.response(first), status=303)
    assert signed_in_as(saml_app) == "alice@example.com"


def test_unsolicited_response_is_refused_by_default(saml_app, idp):
    refused(post_response(saml_app, idp.response(None), status=400), "unsolicited")


def test_subject_confirmation_in_response_to_must_match(saml_app, idp):
    request_id = start_login(saml_app)
    xml = idp.response(request_id, sc_in_response_to=new_id())
    refused(post_response(saml_app, xml, status=400), "in_response_to")


def test_replay_of_an_idp_initiated_response_is_refused(make_app, idp):
    app = make_app(**{"saml.allow_idp_initiated": "true"})
    xml = idp.response(None)
    post_response(app, xml, status=303)
    other_browser = type(app)(app.app, extra_environ=app.extra_environ)
    refused(post_response(other_browser, xml, status=403), "replay")


def test_replay_across_two_instances_sharing_a_database(make_app, idp, database_url):
    first = make_app(**{"sqlalchemy.url": database_url, "saml.allow_idp_initiated": "true"})
    second = make_app(**{"sqlalchemy.url": database_url, "saml.allow_idp_initiated": "true"})
    xml = idp.response(None)
    post_response(first, xml, status=303)
    refused(post_response(second, xml, status=403), "replay")
    with first.app.registry.dbsession_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SeenAssertion)) == 1


def test_sign_in_started_on_one_instance_completes_on_another(make_app, idp, database_url):
    first = make_app(**{"sqlalchemy.url": database_url})
    second = make_app(**{"sqlalchemy.url": database_url})
    request_id = start_login(first)
    second.cookiejar = first.cookiejar  # the load balancer sends the POST elsewhere
    post_response(second, idp.response(request_id), status=303)
    assert signed_in_as(second) == "alice@example.com"


# ---------------------------------------------------------------- next and RelayState


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_offsite_next_is_refused(saml_app, target):
    refused(saml_app.get("/saml/login", params={"next": target}, status=400), "unsafe_next")


def test_offsite_relay_state_is_refused(make_app, idp):
    app = make_app(**{"saml.allow_idp_initiated": "true"})
    refused(
        post_response(app, idp.response(None), relay_state="https://evil.example/", status=400), "unsafe_relay_state"
    )


def test_request_rows_long_expired_are_deleted(saml_app):
    """Started sign-ins that were never answered do not pile up in saml_requests."""
    from gateway.db.models import SamlRequest

    old, recent = start_login(saml_app), start_login(saml_app)
    now = dt.datetime.now(dt.UTC)
    with saml_app.app.registry.dbsession_factory() as db, db.begin():
        db.get(SamlRequest, old).expires_at = now - dt.timedelta(hours=2)
        db.get(SamlRequest, recent).expires_at = now - dt.timedelta(minutes=1)
    fresh = start_login(saml_app)
    with saml_app.app.registry.dbsession_factory() as db:
        assert set(db.scalars(sa.select(SamlRequest.request_id))) == {recent, fresh}


# ---------------------------------------------------------------- durability


@pytest.mark.postgres
def test_only_the_logins_commit_skips_the_wait_for_the_disk(make_app, postgres_url, idp):
    """The login's row may be lost in a database crash (the person signs in again);
    the sign-in's session, its replay id and a sign-out are committed durably."""
    app = make_app(**{"sqlalchemy.url": postgres_url})
    engine = app.app.registry.dbsession_factory().get_bind()
    seen: list[str] = []

    @sa.event.listens_for(engine, "commit")
    def before_commit(connection):
        seen.append(connection.exec_driver_sql("SHOW synchronous_commit").scalar())

    request_id = start_login(app)
    assert seen[-1] == "off"
    post_response(app, idp.response(request_id), status=303)
    assert seen[-1] == "on"
    assert app.get("/whoami").json["userName"] == "alice@example.com"
    csrf = app.get("/").html.find("input", {"name": "csrf_token"})["value"]
    before = len(seen)
    app.post("/logout", {"csrf_token": csrf}, status=303)
    assert len(seen) > before and seen[-1] == "on"


def test_encrypted_assertion_is_refused_with_what_to_change(saml_app, idp):
    """Token encryption is not used: an EncryptedAssertion (schema-valid) is refused by name
    before pysaml2 would try to decrypt it."""
    request_id = start_login(saml_app)
    head, _good, tail = _split(idp.response(request_id))
    encrypted = (
        '<saml:EncryptedAssertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">'
        '<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"'
        ' Type="http://www.w3.org/2001/04/xmlenc#Element">'
        '<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/>'
        "<xenc:CipherData><xenc:CipherValue>AAAA</xenc:CipherValue></xenc:CipherData>"
        "</xenc:EncryptedData></saml:EncryptedAssertion>"
    )
    response = refused(post_response(saml_app, head + encrypted + tail, status=400), "encrypted_assertion")
    assert "Turn it off in Entra" in response.text
    saml_app.get("/whoami", status=401)
