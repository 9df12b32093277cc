"""The development IdP's keys, metadata and Entra-shaped responses."""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
XMLSOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
MICROSOFT = "http://schemas.microsoft.com/identity/claims/"
GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

#: A made-up tenant; object ids are derived from it so they stay stable.
TENANT = uuid.UUID("00000000-0000-4000-8000-00000000de0f")

#: The people on the pick page: (email, display name, groups).
TEST_USERS = (
    ("alice@example.com", "Alice Admin", ("Staff", "Gateway Admins")),
    ("bob@example.com", "Bob Builder", ("Staff",)),
    ("carol@example.com", "Carol Contractor", ("Contractors",)),
)


def key_folder(database_url: str) -> str:
    """Next to the SQLite file, else ``./var``: a place development already writes to."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return os.path.join(os.path.dirname(os.path.abspath(url.database)), "devidp")
    return os.path.abspath(os.path.join("var", "devidp"))


def object_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(TENANT, f"{kind}:{name.lower()}"))


def _instant(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # seven digits, like Entra


class DevIdp:
    def __init__(self, base_url: str, folder: str):
        self.base_url = base_url
        self.entity_id = f"https://sts.windows.net/{TENANT}/"
        self.sso_url = base_url + "/devidp/saml2"
        self.key_file = os.path.join(folder, "devidp.key")
        self.cert_file = os.path.join(folder, "devidp.crt")
        if not (os.path.exists(self.key_file) and os.path.exists(self.cert_file)):
            self._make_key(folder)
        with open(self.cert_file, "rb") as handle:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            cert = x509.load_pem_x509_certificate(handle.read())
            self.cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def _make_key(self, folder: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        os.makedirs(folder, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Development IdP (not Microsoft)")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3 * 365))  # Entra's certificates last three years
            .sign(key, hashes.SHA256())
        )
        # Owner-only: it is a signing key, even if only for development.
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        with open(self.cert_file, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))

    def metadata(self) -> str:
        redirect = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        return (
            f'<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{self.entity_id}">'
            f'<IDPSSODescriptor protocolSupportEnumeration="{SAMLP}">'
            '<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
            f"<X509Certificate>{self.cert_b64}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
            f'<SingleSignOnService Binding="{redirect}" Location="{escape(self.sso_url)}"/>'
            "</IDPSSODescriptor></EntityDescriptor>"
        )

    def response(
        self, *, email: str, display_name: str, groups, in_response_to: str | None, acs_url: str, audience: str
    ) -> str:
        """A signed Response as Entra shapes it by default (assertion signed, response not)."""
        now = dt.datetime.now(dt.UTC)
        assertion_id = "_" + str(uuid.uuid4())
        response_id = "_" + str(uuid.uuid4())
        first, _, last = display_name.partition(" ")
        claims = {
            MICROSOFT + "tenantid": [str(TENANT)],
            MICROSOFT + "objectidentifier": [object_id("user", email)],
            MICROSOFT + "displayname": [display_name],
            MICROSOFT + "identityprovider": [self.entity_id],
            XMLSOAP + "givenname": [first],
            XMLSOAP + "surname": [last or first],
            XMLSOAP + "emailaddress": [email],
            XMLSOAP + "name": [email],
            GROUPS: [object_id("group", g) for g in groups],
        }
        attributes = "".join(
            f"<Attribute Name={quoteattr(name)}>"
            + "".join(f"<AttributeValue>{escape(v)}</AttributeValue>" for v in values)
            + "</Attribute>"
            for name, values in claims.items()
            if values
        )
        irt = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        window = (_instant(now - dt.timedelta(minutes=5)), _instant(now + dt.timedelta(minutes=60)))
        assertion = (
            f'<Assertion xmlns="{SAML}" ID="{assertion_id}" IssueInstant="{_instant(now)}" Version="2.0">'
            f"<Issuer>{self.entity_id}</Issuer>{self._signature_template(assertion_id)}"
            f'<Subject><NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{escape(email)}</NameID>'
            f'<SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><SubjectConfirmationData{irt}'
            f' NotOnOrAfter="{window[1]}" Recipient={quoteattr(acs_url)}/></SubjectConfirmation></Subject>'
            f'<Conditions NotBefore="{window[0]}" NotOnOrAfter="{window[1]}">'
            f"<AudienceRestriction><Audience>{escape(audience)}</Audience></AudienceRestriction></Conditions>"
            f"<AttributeStatement>{attributes}</AttributeStatement>"
            f'<AuthnStatement AuthnInstant="{_instant(now)}" SessionIndex="{assertion_id}"><AuthnContext>'
            "<AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</AuthnContextClassRef>"
            "</AuthnContext></AuthnStatement></Assertion>"
        )
        signed = self._sign(assertion, assertion_id)
        return (
            f'<samlp:Response xmlns:samlp="{SAMLP}" ID="{response_id}" Version="2.0" IssueInstant="{_instant(now)}"'
            f" Destination={quoteattr(acs_url)}{irt}>"
            f'<Issuer xmlns="{SAML}">{self.entity_id}</Issuer>'
            '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
            f"{signed}</samlp:Response>"
        )

    def _signature_template(self, ref: str) -> str:
        return (
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="{RSA_SHA256}"/>'
            f'<ds:Reference URI="#{ref}"><ds:Transforms>'
            '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
            f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"/>'
            "<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data>"
            f"<ds:X509Certificate>{self.cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"
        )

    def _sign(self, assertion: str, assertion_id: str) -> str:
        """Sign in-process (lxml + cryptography): the development IdP needs no xmlsec1 program either."""
        from cryptography.hazmat.primitives import serialization

        from gateway.saml import verify

        with open(self.key_file, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), None)
        unsigned = assertion.replace(self._signature_template(assertion_id), "", 1)
        return verify.sign(unsigned.encode(), assertion_id, key, RSA_SHA256, SHA256).decode()
