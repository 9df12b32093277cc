"""Single logout over the HTTP-Redirect binding, the only one Entra supports for logout.

A Redirect-binding signature covers the query string exactly as sent, and
Entra percent-encodes in lower case (``%2f``) where most libraries write
``%2F``; re-encoding the decoded values, as python3-saml did, breaks Entra's
signatures. So the signed octets are rebuilt from the raw query string.

A LogoutRequest whose signature verifies with an IdP certificate ends every
session of that NameID (and SessionIndex, when given), on every instance. An
unsigned one can only end the session of the browser that carries it, and only
when that session belongs to the NameID it names: forging it gains nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import zlib
from urllib.parse import quote, unquote_plus

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyramid.httpexceptions import HTTPSeeOther
from xml.sax.saxutils import escape, quoteattr

from .. import sessions
from ..db.models import utcnow
from ..provisioning.signin import fire
from .errors import SamlRejection
from .sp import parse_instant
from .xmlguard import SAML, SAMLP, safe_parse

log = logging.getLogger("gateway.saml")

MAX_INFLATED = 256 * 1024

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


def single_logout(provider, request):
    kind, encoded, raw = _message(request)
    idp = provider.idp()
    if request.method == "GET":
        xml = inflate(encoded)
        signed = verify_redirect_signature(raw, kind, idp.certs, provider.allowed_signature_uris)
    else:
        # Entra sends logout only with the Redirect binding; a POSTed message
        # is accepted, but only as an unsigned one (it ends this browser's session).
        try:
            xml = base64.b64decode(encoded)
        except ValueError:
            raise SamlRejection("malformed", "The sign-out message is malformed.") from None
        signed = False
    root = safe_parse(xml)
    if kind == "SAMLResponse":
        # The answer to our own LogoutRequest: this browser's session ended
        # already when it was sent; make sure, then go home.
        if root.tag != f"{{{SAMLP}}}LogoutResponse":
            raise SamlRejection("not_a_logout_response", "The sign-out message is not a LogoutResponse.")
        sessions.end_session(request)
        return HTTPSeeOther(location=request.route_url("home"))

    if root.tag != f"{{{SAMLP}}}LogoutRequest":
        raise SamlRejection("not_a_logout_request", "The sign-out message is not a LogoutRequest.")
    issuer = (root.findtext(f"{{{SAML}}}Issuer") or "").strip()
    if issuer != idp.entity_id:
        raise SamlRejection("issuer", "The sign-out message comes from an identity provider this gateway does not trust.",
                            detail=f"issuer {issuer!r}", status=403)
    destination = root.get("Destination")
    if destination is not None and destination != provider.slo_url:
        raise SamlRejection("destination", "The sign-out message was addressed to another site.", detail=destination)
    not_on_or_after = parse_instant(root.get("NotOnOrAfter"))
    if not_on_or_after and utcnow() - dt.timedelta(seconds=provider.saml.clock_skew) >= not_on_or_after:
        raise SamlRejection("expired", "The sign-out message has expired.")
    name_id = (root.findtext(f"{{{SAML}}}NameID") or "").strip()
    if not name_id:
        raise SamlRejection("no_subject", "The sign-out message does not say who signs out.")
    indexes = [(e.text or "").strip() for e in root.findall(f"{{{SAMLP}}}SessionIndex") if (e.text or "").strip()]

    ended = 0
    if signed:
        for index in indexes or [None]:
            ended += sessions.end_sessions_by_name_id(request.dbsession, name_id, index)
    identity = request.identity
    if identity is not None and identity.name_id == name_id and (not indexes or identity.session_index in indexes):
        sessions.end_session(request)
        fire(request, "signed_out", identity.user_id, identity.user_name, actor="idp")
        ended += 1
    log.info("single logout: name_id=%s signed=%s ended=%d correlation_id=%s", name_id, signed, ended, request.correlation_id)
    if not idp.slo_redirect_url:
        return HTTPSeeOther(location=request.route_url("home"))
    response_xml = _logout_response_xml(provider, idp.slo_redirect_url, root.get("ID") or "")
    relay_state = unquote_plus(raw["RelayState"]) if "RelayState" in raw else None
    return HTTPSeeOther(location=redirect_url(provider, idp.slo_redirect_url, "SAMLResponse", response_xml, relay_state))


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


def logout_request_url(provider, identity) -> str | None:
    """The IdP URL that carries our LogoutRequest for this (already ended) session."""
    idp = provider.store.current()
    if idp is None or not idp.slo_redirect_url or not identity.name_id:
        return None
    index = f"<samlp:SessionIndex>{escape(identity.session_index)}</samlp:SessionIndex>" if identity.session_index else ""
    xml = (
        f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_{secrets.token_hex(16)}"'
        f' Version="2.0" IssueInstant="{_instant()}" Destination={quoteattr(idp.slo_redirect_url)}>'
        f"<saml:Issuer>{escape(provider.entity_id)}</saml:Issuer>"
        f"<saml:NameID>{escape(identity.name_id)}</saml:NameID>{index}"
        "</samlp:LogoutRequest>"
    )
    return redirect_url(provider, idp.slo_redirect_url, "SAMLRequest", xml, None)


def redirect_url(provider, location: str, kind: str, xml: str, relay_state: str | None) -> str:
    """HTTP-Redirect binding: deflate, base64, and sign the query when the SP has a key."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(xml.encode("utf-8")) + compressor.flush()
    query = f"{kind}={quote(base64.b64encode(deflated).decode('ascii'), safe='')}"
    if relay_state is not None:
        query += f"&RelayState={quote(relay_state, safe='')}"
    key_file = provider.saml.key_file
    if key_file:
        with open(key_file, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        query += f"&SigAlg={quote(provider.sign_alg, safe='')}"
        signature = key.sign(query.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        query += f"&Signature={quote(base64.b64encode(signature).decode('ascii'), safe='')}"
    return location + ("&" if "?" in location else "?") + query
