"""The test IdP: an Entra-shaped IdP with real keys and real signatures.

Keys and certificates are made by :func:`make_keypair` in a folder of your
choice. Responses are built the way Entra shapes them (claim URIs, issuer
``https://sts.windows.net/<tenant>/``, -5/+60 minute windows, assertion
signed with RSA-SHA256 by default) and signed by pysaml2's xmlsec1 backend
(the ``xmlsec1`` program must be installed), so the gateway under test
verifies real signatures. :func:`sign_in_as` completes a whole SP-initiated
sign-in as a given person; each knob of :meth:`TestIdp.response` exists for
one refusal test.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
TENANT = "2f277f1e-e5f1-4f62-b595-79c2d13afda4"
IDP_ENTITY = f"https://sts.windows.net/{TENANT}/"
IDP_SSO = f"https://login.microsoftonline.com/{TENANT}/saml2"
XMLSOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
MICROSOFT = "http://schemas.microsoft.com/identity/claims/"
GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"

BASE = "http://localhost"
ACS = BASE + "/saml/acs"
SLO = BASE + "/saml/slo"
SP_ENTITY = BASE + "/saml/metadata"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
#: Entra's LogoutResponse issuer differs from its assertion issuer.
ENTRA_LOGOUT_ISSUER = f"https://login.microsoftonline.com/{TENANT}/"


@dataclass(frozen=True)
class KeyPair:
    key_file: str
    cert_file: str
    cert_b64: str  # DER, base64, as in metadata and KeyInfo
    not_after: dt.datetime


def make_keypair(folder: Path, name: str, days: int = 1095, common_name: str | None = None) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"Test IdP {name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_file = folder / f"{name}.key"
    cert_file = folder / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return KeyPair(str(key_file), str(cert_file), der, cert.not_valid_after_utc)


def instant(value: dt.datetime) -> str:
    # Entra writes seven fractional digits; three are enough to exercise parsing.
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_id() -> str:
    return "_" + secrets.token_hex(16)


def signature_template(ref_id: str, cert_b64: str, sign_alg: str, digest_alg: str) -> str:
    return (
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
        f'<ds:SignatureMethod Algorithm="{sign_alg}"/>'
        f'<ds:Reference URI="#{ref_id}"><ds:Transforms>'
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{digest_alg}"/><ds:DigestValue/></ds:Reference></ds:SignedInfo>'
        "<ds:SignatureValue/><ds:KeyInfo><ds:X509Data>"
        f"<ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"
    )


class TestIdp:
    """An IdP shaped like Entra: metadata, signed responses, logout requests."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, folder: Path, keys: KeyPair, rollover: KeyPair, attacker: KeyPair):
        from saml2.sigver import CryptoBackendXmlSec1, get_xmlsec_binary

        self.folder = folder
        self.keys = keys
        self.rollover = rollover
        self.attacker = attacker
        self.entity_id = IDP_ENTITY
        self.crypto = CryptoBackendXmlSec1(get_xmlsec_binary())

    # ------------------------------------------------------------ metadata

    def metadata(
        self,
        certs: list[KeyPair] | None = None,
        bom: bool = True,
        entity_id: str | None = None,
        sso_url: str = IDP_SSO,
        slo_url: str = IDP_SSO,
    ) -> bytes:
        certs = certs if certs is not None else [self.keys]
        keys = "".join(
            '<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
            f"<X509Certificate>{k.cert_b64}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
            for k in certs
        )
        xml = (
            f'<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" ID="{new_id()}"'
            f" entityID={quoteattr(entity_id or self.entity_id)}>"
            f'<IDPSSODescriptor protocolSupportEnumeration="{SAMLP}">{keys}'
            f'<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location={quoteattr(slo_url)}/>'
            f'<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location={quoteattr(sso_url)}/>'
            "</IDPSSODescriptor></EntityDescriptor>"
        )
        return (b"\xef\xbb\xbf" if bom else b"") + xml.encode()

    def write_metadata(self, name: str = "idp-metadata.xml", **kwargs) -> str:
        path = self.folder / name
        path.write_bytes(self.metadata(**kwargs))
        return str(path)

    # ------------------------------------------------------------ responses

    def claims(self, name: str = "alice@example.com", oid: str | None = None, groups=("Staff",)) -> dict:
        first = name.split("@")[0].split(".")[0].capitalize()
        return {
            MICROSOFT + "tenantid": [TENANT],
            MICROSOFT + "objectidentifier": [oid or "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"],
            MICROSOFT + "displayname": [f"{first} Example"],
            MICROSOFT + "identityprovider": [IDP_ENTITY],
            XMLSOAP + "givenname": [first],
            XMLSOAP + "surname": ["Example"],
            XMLSOAP + "emailaddress": [name],
            XMLSOAP + "name": [name],
            GROUPS: list(groups),
        }

    def response(
        self,
        in_response_to: str | None,
        *,
        name_id: str = "alice@example.com",
        attributes: dict | None = None,
        sign_assertion: bool = True,
        sign_response: bool = False,
        key: KeyPair | None = None,
        sign_alg: str = RSA_SHA256,
        digest_alg: str = SHA256,
        issuer: str | None = None,
        response_issuer: str | None = None,
        audience: str = SP_ENTITY,
        recipient: str = ACS,
        destination: str | None = ACS,
        method: str = BEARER,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        not_on_or_after: dt.datetime | None = None,
        sc_not_on_or_after: dt.datetime | None = None,
        status: str = "urn:oasis:names:tc:SAML:2.0:status:Success",
        status_message: str | None = None,
        assertion_id: str | None = None,
        response_id: str | None = None,
        sc_in_response_to: str | None = "same",
    ) -> str:
        """A Response (XML text), Entra-shaped, signed as asked."""
        now = now or dt.datetime.now(dt.UTC)
        key = key or self.keys
        issuer = issuer or self.entity_id
        response_issuer = response_issuer or issuer
        assertion_id = assertion_id or new_id()
        response_id = response_id or new_id()
        not_before = not_before or now - dt.timedelta(minutes=5)
        not_on_or_after = not_on_or_after or now + dt.timedelta(minutes=60)
        sc_not_on_or_after = sc_not_on_or_after or not_on_or_after
        attributes = self.claims(name_id) if attributes is None else attributes
        irt_attr = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        sc_irt = in_response_to if sc_in_response_to == "same" else sc_in_response_to
        sc_irt_attr = f" InResponseTo={quoteattr(sc_irt)}" if sc_irt else ""
        dest_attr = f" Destination={quoteattr(destination)}" if destination else ""
        attrs = "".join(
            f"<Attribute Name={quoteattr(n)}>"
            + "".join(f"<AttributeValue>{escape(v)}</AttributeValue>" for v in values)
            + "</Attribute>"
            for n, values in attributes.items()
        )
        assertion = (
            f'<Assertion xmlns="{SAML}" ID="{assertion_id}" IssueInstant="{instant(now)}" Version="2.0">'
            f"<Issuer>{escape(issuer)}</Issuer>"
            f'<Subject><NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{escape(name_id)}</NameID>'
            f"<SubjectConfirmation Method={quoteattr(method)}><SubjectConfirmationData{sc_irt_attr}"
            f' NotOnOrAfter="{instant(sc_not_on_or_after)}" Recipient={quoteattr(recipient)}/></SubjectConfirmation></Subject>'
            f'<Conditions NotBefore="{instant(not_before)}" NotOnOrAfter="{instant(not_on_or_after)}">'
            f"<AudienceRestriction><Audience>{escape(audience)}</Audience></AudienceRestriction></Conditions>"
            f"<AttributeStatement>{attrs}</AttributeStatement>"
            f'<AuthnStatement AuthnInstant="{instant(now)}" SessionIndex="_{assertion_id[1:]}">'
            "<AuthnContext><AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</AuthnContextClassRef>"
            "</AuthnContext></AuthnStatement></Assertion>"
        )
        if sign_assertion:
            assertion = self.sign(assertion, "Assertion", assertion_id, key, sign_alg, digest_alg)
            assertion = assertion.split("?>", 1)[1] if assertion.startswith("<?xml") else assertion
        status_xml = f'<samlp:StatusCode Value="{status}"/>'
        if status != "urn:oasis:names:tc:SAML:2.0:status:Success":
            status_xml = (
                f'<samlp:StatusCode Value="{status}"><samlp:StatusCode'
                ' Value="urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported"/></samlp:StatusCode>'
            )
        if status_message:
            status_xml += f"<samlp:StatusMessage>{escape(status_message)}</samlp:StatusMessage>"
        body = assertion if status.endswith(":Success") else ""
        response = (
            f'<samlp:Response xmlns:samlp="{SAMLP}" ID="{response_id}" Version="2.0"'
            f' IssueInstant="{instant(now)}"{dest_attr}{irt_attr}>'
            f'<Issuer xmlns="{SAML}">{escape(response_issuer)}</Issuer>'
            f"<samlp:Status>{status_xml}</samlp:Status>{body}</samlp:Response>"
        )
        if sign_response:
            response = self.sign(response, "Response", response_id, key, sign_alg, digest_alg)
        return response

    def sign(
        self, xml: str, element: str, element_id: str, key: KeyPair, sign_alg=RSA_SHA256, digest_alg=SHA256
    ) -> str:
        """Insert a signature template after the element's Issuer and sign it with xmlsec1."""
        template = signature_template(element_id, key.cert_b64, sign_alg, digest_alg)
        head, issuer_end, tail = xml.partition("</Issuer>")
        xml = head + issuer_end + template + tail
        namespace = SAML if element == "Assertion" else SAMLP
        signed = self.crypto.sign_statement(xml, f"{namespace}:{element}", key.key_file, element_id)
        return signed if isinstance(signed, str) else signed.decode()

    # ------------------------------------------------------------ logout

    def logout_request_xml(
        self, name_id: str, session_index: str | None = None, *, destination: str = SLO, issuer: str | None = None
    ) -> str:
        index = f"<samlp:SessionIndex>{escape(session_index)}</samlp:SessionIndex>" if session_index else ""
        return (
            f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns="{SAML}" ID="{new_id()}" Version="2.0"'
            f' IssueInstant="{instant(dt.datetime.now(dt.UTC))}" Destination={quoteattr(destination)}>'
            f"<Issuer>{escape(issuer or self.entity_id)}</Issuer><NameID>{escape(name_id)}</NameID>{index}"
            "</samlp:LogoutRequest>"
        )

    def logout_response_xml(
        self,
        in_response_to: str | None,
        *,
        issuer: str = ENTRA_LOGOUT_ISSUER,
        destination: str | None = SLO,
        status: str = STATUS_SUCCESS,
        status_message: str | None = None,
    ) -> str:
        """A LogoutResponse as Entra writes it (its issuer is login.microsoftonline.com)."""
        irt = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        dest = f" Destination={quoteattr(destination)}" if destination else ""
        message = f"<samlp:StatusMessage>{escape(status_message)}</samlp:StatusMessage>" if status_message else ""
        return (
            f'<samlp:LogoutResponse xmlns:samlp="{SAMLP}" ID="{new_id()}" Version="2.0"'
            f' IssueInstant="{instant(dt.datetime.now(dt.UTC))}"{dest}{irt}>'
            f'<Issuer xmlns="{SAML}">{escape(issuer)}</Issuer>'
            f'<samlp:Status><samlp:StatusCode Value="{status}"/>{message}</samlp:Status></samlp:LogoutResponse>'
        )

    def redirect_query(
        self,
        kind: str,
        xml: str,
        *,
        relay_state: str | None = None,
        sign: bool = True,
        key: KeyPair | None = None,
        lowercase: bool = True,
    ) -> str:
        """An HTTP-Redirect binding query string, signed like Entra (RSA-SHA256, lower-case escapes)."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = compressor.compress(xml.encode()) + compressor.flush()

        def enc(value: str) -> str:
            quoted = urllib.parse.quote(value, safe="")
            # Entra writes %2f, %3d ...: the signature covers exactly these bytes.
            return _lower_escapes(quoted) if lowercase else quoted

        query = f"{kind}=" + enc(base64.b64encode(deflated).decode())
        if relay_state is not None:
            query += "&RelayState=" + enc(relay_state)
        if sign:
            from cryptography.hazmat.primitives.asymmetric import padding

            query += "&SigAlg=" + enc(RSA_SHA256)
            private = serialization.load_pem_private_key(Path((key or self.keys).key_file).read_bytes(), None)
            signature = private.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
            query += "&Signature=" + enc(base64.b64encode(signature).decode())
        return query

    def logout_request(
        self,
        name_id: str,
        session_index: str | None = None,
        *,
        sign: bool = True,
        destination: str = SLO,
        key: KeyPair | None = None,
        relay_state: str | None = None,
        lowercase: bool = True,
    ) -> str:
        """A Redirect-binding LogoutRequest query string, signed like Entra (lower-case escapes)."""
        xml = self.logout_request_xml(name_id, session_index, destination=destination)
        return self.redirect_query("SAMLRequest", xml, relay_state=relay_state, sign=sign, key=key, lowercase=lowercase)

    def post_signed(
        self, xml: str, *, key: KeyPair | None = None, sign_alg: str = RSA_SHA256, digest_alg: str = SHA256
    ) -> str:
        """``xml`` (a LogoutRequest or LogoutResponse) with an enveloped signature of its root, for the POST binding."""
        import re

        element = re.match(r"<samlp:(\w+)", xml).group(1)
        element_id = re.search(r' ID="([^"]+)"', xml).group(1)
        signed = self.sign(xml, element, element_id, key or self.keys, sign_alg, digest_alg)
        return signed.split("?>", 1)[1] if signed.startswith("<?xml") else signed


def _lower_escapes(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            out.append(value[i : i + 3].lower())
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def b64(xml: str | bytes) -> str:
    return base64.b64encode(xml.encode() if isinstance(xml, str) else xml).decode()


def start_login(app, next_path: str | None = None) -> str:
    """GET /saml/login in this webtest browser; return the AuthnRequest id."""
    params = {"next": next_path} if next_path is not None else {}
    response = app.get("/saml/login", params=params, status=303)
    return authn_request_id(response.headers["Location"])


def authn_request_id(location: str) -> str:
    import re

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    return re.search(r' ID="([^"]+)"', xml).group(1)


def write_test_metadata(folder) -> str:
    """A valid IdP metadata file for tests that only need the app to start (e.g. CLI tests)."""
    folder = Path(folder)
    keys = make_keypair(folder, "cli-idp")
    path = folder / "cli-idp-metadata.xml"
    path.write_bytes(TestIdp(folder, keys, keys, keys).metadata())
    return str(path)


def post_response(app, xml: str, status=None, relay_state: str | None = None, **kwargs):
    params = {"SAMLResponse": b64(xml)}
    if relay_state is not None:
        params["RelayState"] = relay_state
    return app.post("/saml/acs", params, status=status, **kwargs)


def sign_in(app, idp: TestIdp, name: str = "alice@example.com", next_path: str | None = None, **kwargs):
    """A complete SP-initiated sign-in in this webtest browser; returns the ACS response."""
    request_id = start_login(app, next_path)
    return post_response(app, idp.response(request_id, name_id=name, **kwargs), status=303)


def stable_oid(name: str) -> str:
    """A distinct, stable Entra object id per person (the gateway's lasting key)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def sign_in_as(
    app,
    idp: TestIdp,
    name: str = "alice@example.com",
    *,
    groups=("Staff",),
    claims: dict | None = None,
    oid: str | None = None,
    next_path: str | None = None,
    status=303,
):
    """A complete signed SP-initiated sign-in in this webtest browser as ``name``; returns the ACS response.

    ``groups`` become Entra's groups claim; ``oid`` the object identifier
    (default: one derived from ``name``, so each person is distinct);
    ``claims`` adds or replaces claims by URI (a string or a list of strings;
    None removes the claim). ``status`` is the ACS answer expected: 303 for a
    sign-in, 403 for a refusal, None for any.
    """
    attributes = idp.claims(name, oid=oid or stable_oid(name), groups=groups)
    for uri, value in (claims or {}).items():
        if value is None:
            attributes.pop(uri, None)
        else:
            attributes[uri] = [value] if isinstance(value, str) else list(value)
    request_id = start_login(app, next_path)
    return post_response(app, idp.response(request_id, name_id=name, attributes=attributes), status=status)


class Pysaml2Idp:
    """pysaml2's IdP (``saml2.server.Server``) with the test IdP's entity id and keys.

    It trusts the gateway through the SP metadata that ``GET /saml/metadata``
    serves, reads the gateway's real AuthnRequest from the ``/saml/login``
    redirect, and answers with ``create_authn_response``: nothing in the
    response is templated by the tests.
    """

    __test__ = False

    def __init__(self, idp: TestIdp, sp_metadata: str, *, sign_alg: str = RSA_SHA256, digest_alg: str = SHA256):
        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.server import Server
        from saml2.sigver import get_xmlsec_binary

        self.idp = idp
        self.sign_alg = sign_alg
        self.digest_alg = digest_alg
        config = IdPConfig()
        config.load(
            {
                "entityid": idp.entity_id,
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [(IDP_SSO, BINDING_HTTP_REDIRECT)],
                            "single_logout_service": [(IDP_SSO, BINDING_HTTP_REDIRECT)],
                        },
                        # Entra's window: valid from 5 minutes before issue, for 65 minutes.
                        "policy": {"default": {"lifetime": {"minutes": 60}, "attribute_restrictions": None}},
                        "name_id_format": ["urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"],
                    }
                },
                "key_file": idp.keys.key_file,
                "cert_file": idp.keys.cert_file,
                "metadata": {"inline": [sp_metadata]},
                "xmlsec_binary": get_xmlsec_binary(),
                "signing_algorithm": sign_alg,
                "digest_algorithm": digest_alg,
                "delete_tmpfiles": True,
            }
        )
        self.server = Server(config=config)

    def authn_request(self, location: str):
        """The gateway's AuthnRequest as pysaml2's IdP parses it from the redirect URL."""
        from saml2 import BINDING_HTTP_REDIRECT

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        return self.server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)

    def answer(
        self,
        location: str,
        name: str = "alice@example.com",
        *,
        sign_assertion: bool = True,
        sign_response: bool = False,
        attributes: dict | None = None,
    ) -> str:
        """The signed Response (XML text) to the AuthnRequest in ``location``."""
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID

        request = self.authn_request(location)
        args = self.server.response_args(request.message)
        response = self.server.create_authn_response(
            # A distinct, stable object id per person: it is the gateway's lasting key.
            self.idp.claims(name, oid=str(uuid.uuid5(uuid.NAMESPACE_URL, name))) if attributes is None else attributes,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
            sign_assertion=sign_assertion,
            sign_response=sign_response,
            sign_alg=self.sign_alg,
            digest_alg=self.digest_alg,
            **args,
        )
        return str(response)

    def sign_in(self, app, name: str = "alice@example.com", next_path: str | None = None, status=303, **kwargs):
        """/saml/login in this webtest browser, pysaml2's answer POSTed to the ACS."""
        params = {"next": next_path} if next_path is not None else {}
        location = app.get("/saml/login", params=params, status=303).headers["Location"]
        return post_response(app, self.answer(location, name, **kwargs), status=status)
