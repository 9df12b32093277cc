"""Single logout over the HTTP-Redirect binding, the only one Entra supports for logout.

A Redirect-binding signature covers the query string exactly as sent, and
Entra percent-encodes in lower case (``%2f``) where most libraries write
``%2F``; re-encoding the decoded values, as python3-saml did, breaks Entra's
signatures. So the signed octets are rebuilt from the raw query string.

A POSTed message (other IdPs; Entra never POSTs logout) carries an enveloped
XML signature instead, checked like a Response's: one signature, on the root,
covering the root by ID, allowed algorithms, verified (in-process, or by
xmlsec1 with saml.crypto_backend = xmlsec1) with the IdP metadata's certificates.

A LogoutRequest whose signature verifies with an IdP certificate ends every
session of that NameID (and SessionIndex, when given), on every instance. It
is accepted once (its ID goes into the replay cache, gateway/saml/replay.py)
and only while fresh: IssueInstant not in the future beyond the clock skew,
and not past NotOnOrAfter, or :data:`LOGOUT_REQUEST_LIFETIME` after
IssueInstant when it has none; so a captured logout URL cannot end the
person's later sessions. An unsigned one can only end the session of the
browser that carries it, and only when that session belongs to the NameID it
names; and not when it arrives by a GET from another site (a link anywhere,
which the SameSite=Lax cookie follows): that browser gets a page with a Sign
out button (a CSRF-checked POST) instead. A signature that is present but
does not verify is always a refusal.

A LogoutResponse must come from the IdP (Entra writes
``https://login.microsoftonline.com/{tenant}/`` there, not the assertion
issuer), be addressed to our SLO URL, answer a LogoutRequest that this
browser sent (``saml_requests`` row of kind ``logout``, bound like an
AuthnRequest, used once) and report success.

Our own LogoutRequests and LogoutResponses are signed (RSA-SHA256) when
``saml.key_file`` is set; AuthnRequests never are (see sp.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import secrets
import tempfile
import zlib
from urllib.parse import quote, unquote_plus
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyramid.httpexceptions import HTTPSeeOther
from saml2.sigver import CryptoBackendXmlSec1, SignatureError

from .. import sessions
from ..db.models import utcnow
from ..provisioning.signin import fire
from ..templating import render_page
from . import browser, replay, verify
from .errors import SamlRejection
from .sp import STATUS_SUCCESS, parse_instant
from .xmlguard import SAML, SAMLP, SIGNATURE, check_enveloped_signature, check_unique_ids, safe_parse

log = logging.getLogger("gateway.saml")

MAX_INFLATED = 256 * 1024
#: How long a LogoutRequest without NotOnOrAfter is accepted after its IssueInstant.
LOGOUT_REQUEST_LIFETIME = dt.timedelta(minutes=5)
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ENTRA_ISSUER = re.compile(r"^https://sts\.windows\.net/([0-9a-fA-F-]{36})/$")

HASHES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": hashes.SHA1,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512,
}


def raw_query(query_string: str) -> dict[str, str]:
    """The query parameters, values still percent-encoded exactly as sent."""
    out = {}
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if name and name not in out:
            out[name] = value
    return out


def inflate(value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=False)
        inflater = zlib.decompressobj(-15)
        xml = inflater.decompress(data, MAX_INFLATED)
    except (ValueError, zlib.error):
        raise SamlRejection("malformed", "The sign-out message is malformed.") from None
    if inflater.unconsumed_tail:
        raise SamlRejection("too_large", "The sign-out message is too large.")
    return xml


def verify_redirect_signature(raw: dict[str, str], kind: str, certs, allowed_uris: set[str]) -> bool:
    """True when the query carries a valid signature by one of ``certs``; False when unsigned."""
    if "Signature" not in raw:
        return False
    sig_alg = unquote_plus(raw.get("SigAlg", ""))
    if sig_alg not in allowed_uris or sig_alg not in HASHES:
        raise SamlRejection("signature_algorithm", "The sign-out message uses a signature algorithm not allowed here.")
    octets = f"{kind}={raw[kind]}"
    if "RelayState" in raw:
        octets += f"&RelayState={raw['RelayState']}"
    octets += f"&SigAlg={raw['SigAlg']}"
    try:
        signature = base64.b64decode(unquote_plus(raw["Signature"]))
    except ValueError:
        raise SamlRejection("signature_invalid", "The sign-out message's signature is malformed.") from None
    algorithm = HASHES[sig_alg]()
    for cert in certs:
        key = x509.load_der_x509_certificate(cert.der).public_key()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, octets.encode("ascii"), padding.PKCS1v15(), algorithm)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, octets.encode("ascii"), ec.ECDSA(algorithm))
            else:
                continue
            return True
        except InvalidSignature:
            continue
    raise SamlRejection("signature_invalid", "The sign-out message's signature does not verify.", status=403)


def _message(request) -> tuple[str, str, dict[str, str]]:
    """(kind, encoded message, raw query) from a Redirect (GET) or POST request."""
    if request.method == "GET":
        raw = raw_query(request.environ.get("QUERY_STRING", ""))
        for kind in ("SAMLRequest", "SAMLResponse"):
            if kind in raw:
                return kind, unquote_plus(raw[kind]), raw
    else:
        for kind in ("SAMLRequest", "SAMLResponse"):
            if request.POST.get(kind):
                return kind, request.POST[kind], {}
    raise SamlRejection("missing_message", "The sign-out message is missing.")


def verify_post_signature(provider, root, xml: bytes, certs) -> bool:
    """True when the POSTed message carries a valid enveloped signature by one of ``certs``; False when unsigned.

    The structure is pinned first (as for a Response): every ID unique, at
    most one Signature in the document, a child of the root, covering the
    root by its ID with allowed algorithms only. The configured backend
    (gateway/saml/verify.py, or xmlsec1) then verifies that one signature
    over that one element, with the IdP metadata's
    certificates only (never a KeyInfo in the message).
    """
    check_unique_ids(root)
    signatures = [e for e in root.iter() if e.tag == SIGNATURE]
    if not signatures:
        return False
    if len(signatures) > 1 or signatures[0] not in list(root):
        raise SamlRejection("signature_location", "A signature is in a place the SAML profile does not allow.")
    check_enveloped_signature(signatures[0], root, provider.allowed_signature_uris, provider.allowed_digest_uris)
    if provider.verifier is not None:  # saml.crypto_backend = inprocess
        try:
            verify.verify(
                xml,
                root.get("ID"),
                [x509.load_der_x509_certificate(cert.der) for cert in certs],
                provider.allowed_signature_uris,
                provider.allowed_digest_uris,
            )
        except verify.VerificationError as exc:
            log.info("sign-out message signature refused: %s", exc)
            raise SamlRejection(
                "signature_invalid", "The sign-out message's signature does not verify.", status=403
            ) from None
        return True
    backend = CryptoBackendXmlSec1(provider.xmlsec, delete_tmpfiles=True)
    node_name = root.tag[1:].replace("}", ":")  # pysaml2's "namespace:Name"
    for cert in certs:
        with tempfile.NamedTemporaryFile(suffix=".der") as handle:
            handle.write(cert.der)
            handle.flush()
            try:
                if backend.validate_signature(xml, handle.name, "der", node_name, root.get("ID")):
                    return True
            except SignatureError:
                continue
    raise SamlRejection("signature_invalid", "The sign-out message's signature does not verify.", status=403)


def idp_issuers(idp) -> set[str]:
    """The issuers a logout message of this IdP may carry.

    Entra's assertions say ``https://sts.windows.net/{tenant}/`` (the metadata
    entityID) but its logout messages say
    ``https://login.microsoftonline.com/{tenant}/`` (Microsoft's
    https://learn.microsoft.com/en-us/entra/identity-platform/single-sign-out-saml-protocol;
    the entityID: https://learn.microsoft.com/en-us/entra/identity-platform/federation-metadata).
    """
    issuers = {idp.entity_id}
    match = ENTRA_ISSUER.match(idp.entity_id)
    if match:
        issuers.add(f"https://login.microsoftonline.com/{match.group(1)}/")
    return issuers


def _check_envelope(provider, idp, root, now, what: str) -> None:
    """Issuer and Destination, the same for a LogoutRequest and a LogoutResponse."""
    issuer = (root.findtext(f"{{{SAML}}}Issuer") or "").strip()
    if issuer not in idp_issuers(idp):
        raise SamlRejection(
            "issuer",
            "The sign-out message comes from an identity provider this gateway does not trust.",
            detail=f"{what} issuer {issuer!r}, expected one of {sorted(idp_issuers(idp))}",
            status=403,
        )
    destination = root.get("Destination")
    if destination is not None and destination != provider.slo_url:
        raise SamlRejection(
            "destination",
            "The sign-out message was addressed to another site.",
            detail=f"{what} Destination {destination!r}, expected {provider.slo_url!r}",
        )


def single_logout(provider, request):
    kind, encoded, raw = _message(request)
    idp = provider.idp()
    if request.method == "GET":
        xml = inflate(encoded)
        root = safe_parse(xml)
        signed = verify_redirect_signature(raw, kind, idp.certs, provider.allowed_signature_uris)
    else:
        # Entra sends logout only with the Redirect binding (Microsoft's
        # https://learn.microsoft.com/en-us/entra/identity-platform/single-sign-out-saml-protocol);
        # other IdPs may POST, with the signature inside the XML.
        try:
            xml = base64.b64decode("".join(encoded.split()), validate=True)
        except ValueError:
            raise SamlRejection("malformed", "The sign-out message is malformed.") from None
        root = safe_parse(xml)
        signed = verify_post_signature(provider, root, xml, idp.certs)
    now = utcnow()
    if kind == "SAMLResponse":
        return _logout_response(provider, idp, request, root, signed, now)
    return _logout_request(provider, idp, request, root, signed, now, raw)


def _logout_response(provider, idp, request, root, signed: bool, now):
    """The answer to our own LogoutRequest: it must answer one that this browser sent."""
    if root.tag != f"{{{SAMLP}}}LogoutResponse":
        raise SamlRejection("not_a_logout_response", "The sign-out message is not a LogoutResponse.")
    _check_envelope(provider, idp, root, now, "LogoutResponse")
    in_response_to = root.get("InResponseTo")
    if not in_response_to:
        raise SamlRejection("in_response_to_unknown", "This answer does not belong to a sign-out started here.")
    browser.bound(request, in_response_to, "logout", now)
    browser.use(request, in_response_to, "logout", now)
    browser.forget(request, in_response_to)
    status = root.find(f"{{{SAMLP}}}Status")
    code = status.find(f"{{{SAMLP}}}StatusCode") if status is not None else None
    value = code.get("Value") if code is not None else None
    if value != STATUS_SUCCESS:
        sub = code.find(f"{{{SAMLP}}}StatusCode") if code is not None else None
        message = (status.findtext(f"{{{SAMLP}}}StatusMessage") if status is not None else None) or ""
        shown = "You are signed out here, but the identity provider could not end its own session."
        if message.strip():
            shown += f" It said: {message.strip()[:500]}"
        raise SamlRejection(
            "idp_status",
            shown,
            detail=f"{value} / {sub.get('Value') if sub is not None else '-'}: {message}",
            status=403,
            hint="Close the browser to end the identity provider's session, or sign out there.",
        )
    # This browser's session ended when the LogoutRequest was sent; make sure.
    sessions.end_session(request)
    log.info(
        "single logout completed: request=%s signed=%s correlation_id=%s",
        in_response_to,
        signed,
        request.correlation_id,
    )
    return HTTPSeeOther(location=request.route_url("home"))


def _logout_request(provider, idp, request, root, signed: bool, now, raw):
    if root.tag != f"{{{SAMLP}}}LogoutRequest":
        raise SamlRejection("not_a_logout_request", "The sign-out message is not a LogoutRequest.")
    _check_envelope(provider, idp, root, now, "LogoutRequest")
    skew = dt.timedelta(seconds=provider.saml.clock_skew)
    issued = parse_instant(root.get("IssueInstant"))
    if issued is None or issued > now + skew:
        raise SamlRejection(
            "issue_instant",
            "The sign-out message's time is missing or in the future.",
            detail=f"IssueInstant {root.get('IssueInstant')!r}",
        )
    not_on_or_after = parse_instant(root.get("NotOnOrAfter")) or issued + LOGOUT_REQUEST_LIFETIME
    if now - skew >= not_on_or_after:
        raise SamlRejection("expired", "The sign-out message has expired.")
    name_id = (root.findtext(f"{{{SAML}}}NameID") or "").strip()
    if not name_id:
        raise SamlRejection("no_subject", "The sign-out message does not say who signs out.")
    indexes = [(e.text or "").strip() for e in root.findall(f"{{{SAMLP}}}SessionIndex") if (e.text or "").strip()]

    ended = 0
    if signed:
        message_id = root.get("ID") or ""
        if not message_id or not replay.first_use(request.dbsession, message_id, not_on_or_after + skew, now):
            raise SamlRejection(
                "replay", "This sign-out message was already used.", detail=f"ID {message_id!r}", status=403
            )
        for index in indexes or [None]:
            ended += sessions.end_sessions_by_name_id(request.dbsession, name_id, index)
    identity = request.identity
    if identity is not None and identity.name_id == name_id and (not indexes or identity.session_index in indexes):
        if not signed and request.method == "GET" and request.headers.get("Sec-Fetch-Site") != "same-origin":
            # Logout CSRF: anyone can link here. Browsers without Sec-Fetch-Site count as cross-site.
            log.info("single logout: unsigned cross-site request for name_id=%s not acted on", name_id)
            return render_page(request, "logout_confirm.html", {})
        sessions.end_session(request)
        fire(request, "signed_out", identity.user_id, identity.user_name, actor="idp")
        ended += 1
    log.info(
        "single logout: name_id=%s signed=%s ended=%d correlation_id=%s", name_id, signed, ended, request.correlation_id
    )
    if not idp.slo_redirect_url:
        return HTTPSeeOther(location=request.route_url("home"))
    response_xml = _logout_response_xml(provider, idp.slo_redirect_url, root.get("ID") or "")
    if "RelayState" in raw:
        relay_state = unquote_plus(raw["RelayState"])
    else:
        relay_state = request.POST.get("RelayState") if request.method == "POST" else None
    return HTTPSeeOther(
        location=redirect_url(provider, idp.slo_redirect_url, "SAMLResponse", response_xml, relay_state)
    )


def _instant() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


def _logout_response_xml(provider, destination: str, in_response_to: str) -> str:
    return (
        f'<samlp:LogoutResponse xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_{secrets.token_hex(16)}"'
        f' Version="2.0" IssueInstant="{_instant()}" Destination={quoteattr(destination)}'
        f" InResponseTo={quoteattr(in_response_to)}>"
        f"<saml:Issuer>{escape(provider.entity_id)}</saml:Issuer>"
        f'<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
        "</samlp:LogoutResponse>"
    )


def logout_request(provider, identity) -> tuple[str, str] | None:
    """(request id, IdP URL carrying our LogoutRequest) for this (already ended) session, or None."""
    idp = provider.store.current()
    if idp is None or not idp.slo_redirect_url or not identity.name_id:
        return None
    # Entra: the ID "must not begin with a number".
    request_id = "_" + secrets.token_hex(16)
    index = (
        f"<samlp:SessionIndex>{escape(identity.session_index)}</samlp:SessionIndex>" if identity.session_index else ""
    )
    xml = (
        f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{request_id}"'
        f' Version="2.0" IssueInstant="{_instant()}" Destination={quoteattr(idp.slo_redirect_url)}>'
        f"<saml:Issuer>{escape(provider.entity_id)}</saml:Issuer>"
        f"<saml:NameID>{escape(identity.name_id)}</saml:NameID>{index}"
        "</samlp:LogoutRequest>"
    )
    return request_id, redirect_url(provider, idp.slo_redirect_url, "SAMLRequest", xml, None)


def redirect_url(provider, location: str, kind: str, xml: str, relay_state: str | None) -> str:
    """HTTP-Redirect binding: deflate, base64, and sign the query when the SP has a key."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(xml.encode("utf-8")) + compressor.flush()
    query = f"{kind}={quote(base64.b64encode(deflated).decode('ascii'), safe='')}"
    if relay_state is not None:
        query += f"&RelayState={quote(relay_state, safe='')}"
    key_file = provider.saml.key_file
    if key_file:
        # Signed over the exact query octets (SAML bindings 3.4.4.1) with
        # SHA-256: RSA-SHA256, the one Entra verifies, or ECDSA-SHA256.
        with open(key_file, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            query += f"&SigAlg={quote(ECDSA_SHA256, safe='')}"
            signature = key.sign(query.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        else:
            query += f"&SigAlg={quote(RSA_SHA256, safe='')}"
            signature = key.sign(query.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        query += f"&Signature={quote(base64.b64encode(signature).decode('ascii'), safe='')}"
    return location + ("&" if "?" in location else "?") + query
