"""In-process XML signature verification (``saml.crypto_backend = inprocess``).

Built on lxml (libxml2's exclusive canonicalization) and ``cryptography``;
no ``xmlsec1`` program, no temporary files. It verifies only what the SAML
signature profile needs, and refuses everything else:

* the key comes only from the certificates given by the caller (the IdP
  metadata's signing certificates); ``KeyInfo`` in the message is ignored;
* the signed element is found by its ``ID`` attribute, which must be unique in
  the document; it must hold exactly one ``Signature`` child, with exactly one
  ``Reference``, whose URI is ``#`` + that ID (same document, covering the
  signature's parent);
* ``SignatureMethod`` must be in ``saml.allowed_signature_algorithms`` and the
  ``DigestMethod`` of the same strength or stronger (and allowed);
* canonicalization is exclusive c14n (without comments); the transforms are
  enveloped-signature (required) and exclusive c14n, nothing else; no
  ``Object`` element; a DTD refuses the document.

:func:`self_test` verifies a known-good signature and refuses known-bad ones;
the gateway runs it at start-up so a broken install fails then, not at the
first sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

_SIG = f"{{{DS}}}Signature"
_SIGNED_INFO = f"{{{DS}}}SignedInfo"
_SIGNATURE_VALUE = f"{{{DS}}}SignatureValue"
_KEY_INFO = f"{{{DS}}}KeyInfo"
_INCLUSIVE_NS = f"{{{EXC_C14N}}}InclusiveNamespaces"

#: signature URI -> (key kind, hash)
SIGNATURE_METHODS = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ec", hashes.SHA512),
}
#: digest URI -> (hashlib name, bits)
DIGEST_METHODS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": ("sha1", 160),
    "http://www.w3.org/2001/04/xmlenc#sha256": ("sha256", 256),
    "http://www.w3.org/2001/04/xmldsig-more#sha384": ("sha384", 384),
    "http://www.w3.org/2001/04/xmlenc#sha512": ("sha512", 512),
}

_PARSER_OPTIONS = dict(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False
)
_parsers = __import__("threading").local()


class VerificationError(Exception):
    """The signature is refused; the message says why (for logs and sign-in traces)."""


def _parser() -> etree.XMLParser:
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(**_PARSER_OPTIONS)
    return parser


def parse(xml: bytes | str) -> etree._Element:
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        raise VerificationError(f"not well-formed: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None or root.getroottree().docinfo.doctype:
        raise VerificationError("a DTD is not allowed")
    return root


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _c14n(element, prefixes) -> bytes:
    return etree.tostring(
        element, method="c14n", exclusive=True, with_comments=False, inclusive_ns_prefixes=prefixes or None
    )


def _prefixes(parent) -> list[str] | None:
    found = [e for e in parent if e.tag == _INCLUSIVE_NS]
    if len(found) > 1:
        raise VerificationError("more than one InclusiveNamespaces")
    if not found:
        return None
    return (found[0].get("PrefixList") or "").split()


def _one(parent, tag: str, what: str):
    found = [e for e in parent if e.tag == tag]
    if len(found) != 1:
        raise VerificationError(f"expected exactly one {what}, found {len(found)}")
    return found[0]


def _children_only(element, allowed: Iterable[str], what: str) -> None:
    allowed = set(allowed)
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments and PIs are not part of exclusive c14n without comments
        if child.tag not in allowed:
            raise VerificationError(f"unexpected {child.tag} in {what}")


def verify_element(
    root,
    node_id: str,
    certificates: Iterable[x509.Certificate],
    signature_uris: set[str],
    digest_uris: set[str],
) -> None:
    """Verify the enveloped signature of the element whose ID is ``node_id``; raise VerificationError.

    ``root`` is modified (the signature is taken out of the signed element), so
    pass a tree parsed for this call.
    """
    if not node_id:
        raise VerificationError("no ID to verify")
    targets = [e for e in root.iter() if isinstance(e.tag, str) and e.get("ID") == node_id]
    if len(targets) != 1:
        raise VerificationError(f"{len(targets)} elements carry ID {node_id!r}")
    element = targets[0]
    signature = _one(element, _SIG, "Signature in the signed element")
    _children_only(signature, (_SIGNED_INFO, _SIGNATURE_VALUE, _KEY_INFO), "Signature")
    signed_info = _one(signature, _SIGNED_INFO, "SignedInfo")
    _children_only(
        signed_info,
        (f"{{{DS}}}CanonicalizationMethod", f"{{{DS}}}SignatureMethod", f"{{{DS}}}Reference"),
        "SignedInfo",
    )
    c14n_method = _one(signed_info, f"{{{DS}}}CanonicalizationMethod", "CanonicalizationMethod")
    if c14n_method.get("Algorithm") != EXC_C14N:
        raise VerificationError(f"canonicalization {c14n_method.get('Algorithm')!r} is not exclusive c14n")
    signed_info_prefixes = _prefixes(c14n_method)
    method = _one(signed_info, f"{{{DS}}}SignatureMethod", "SignatureMethod")
    sig_alg = method.get("Algorithm")
    if sig_alg not in signature_uris or sig_alg not in SIGNATURE_METHODS:
        raise VerificationError(f"signature algorithm {sig_alg!r} is not allowed")
    if len(method):
        raise VerificationError("SignatureMethod parameters are not allowed")
    key_kind, hash_class = SIGNATURE_METHODS[sig_alg]
    reference = _one(signed_info, f"{{{DS}}}Reference", "Reference")
    if reference.get("URI") != "#" + node_id:
        raise VerificationError(f"the reference {reference.get('URI')!r} does not cover the signed element")
    _children_only(reference, (f"{{{DS}}}Transforms", f"{{{DS}}}DigestMethod", f"{{{DS}}}DigestValue"), "Reference")
    transforms = _one(reference, f"{{{DS}}}Transforms", "Transforms")
    _children_only(transforms, (f"{{{DS}}}Transform",), "Transforms")
    algorithms = [t.get("Algorithm") for t in transforms]
    if algorithms not in ([ENVELOPED], [ENVELOPED, EXC_C14N]):
        raise VerificationError(f"transforms {algorithms!r} are not enveloped-signature then exclusive c14n")
    reference_prefixes = _prefixes(transforms[1]) if len(algorithms) == 2 else None
    if len(transforms[0]):
        raise VerificationError("the enveloped-signature transform takes no parameters")
    digest_method = _one(reference, f"{{{DS}}}DigestMethod", "DigestMethod")
    digest_alg = digest_method.get("Algorithm")
    if digest_alg not in digest_uris or digest_alg not in DIGEST_METHODS:
        raise VerificationError(f"digest algorithm {digest_alg!r} is not allowed")
    hash_name, bits = DIGEST_METHODS[digest_alg]
    if bits < hash_class.digest_size * 8:
        raise VerificationError(f"digest {digest_alg!r} is weaker than the signature algorithm {sig_alg!r}")
    try:
        expected_digest = base64.b64decode(_one(reference, f"{{{DS}}}DigestValue", "DigestValue").text or "")
        signature_value = base64.b64decode(_one(signature, _SIGNATURE_VALUE, "SignatureValue").text or "")
    except ValueError:
        raise VerificationError("DigestValue or SignatureValue is not base64") from None

    # SignedInfo first, in place (its namespace context is the document's).
    signed_bytes = _c14n(signed_info, signed_info_prefixes)
    # Then the enveloped-signature transform: the element without its
    # Signature (the text around the Signature stays, as in the XPath filter).
    tail = signature.tail
    previous = signature.getprevious()
    element.remove(signature)
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            element.text = (element.text or "") + tail
    digest = hashlib.new(hash_name, _c14n(element, reference_prefixes)).digest()
    if not hmac.compare_digest(digest, expected_digest):
        raise VerificationError("the digest of the signed element does not match")

    tried = 0
    for certificate in certificates:
        key = certificate.public_key()
        try:
            if key_kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                tried += 1
                key.verify(signature_value, signed_bytes, padding.PKCS1v15(), hash_class())
                return
            if key_kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
                tried += 1
                size = (key.curve.key_size + 7) // 8
                if len(signature_value) != 2 * size:
                    continue
                r = int.from_bytes(signature_value[:size], "big")
                s = int.from_bytes(signature_value[size:], "big")
                key.verify(encode_dss_signature(r, s), signed_bytes, ec.ECDSA(hash_class()))
                return
        except InvalidSignature:
            continue
    if not tried:
        raise VerificationError(f"no certificate with a {key_kind.upper()} key for {sig_alg!r}")
    raise VerificationError("the signature does not verify with the identity provider's certificates")


def verify(xml: bytes | str, node_id: str, certificates, signature_uris, digest_uris) -> None:
    """Parse ``xml`` and verify the signature of the element with ID ``node_id``; raise VerificationError."""
    verify_element(parse(xml), node_id, list(certificates), set(signature_uris), set(digest_uris))


# ---------------------------------------------------------------- self-test


def _self_test_material():
    """A fresh key pair and a document signed with it (built here, so no file can go stale)."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import rsa as _rsa
    from cryptography.x509.oid import NameOID

    key = _rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway self-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign(xml: bytes, node_id: str, key, sig_uri: str, digest_uri: str) -> bytes:
    """Add an enveloped signature to the element with ID ``node_id`` (RSA keys; for the self-test and tests)."""
    root = parse(xml)
    element = next(e for e in root.iter() if isinstance(e.tag, str) and e.get("ID") == node_id)
    _kind, hash_class = SIGNATURE_METHODS[sig_uri]
    hash_name, _bits = DIGEST_METHODS[digest_uri]
    digest = base64.b64encode(hashlib.new(hash_name, _c14n(element, None)).digest()).decode()
    from lxml.builder import ElementMaker

    E = ElementMaker(namespace=DS, nsmap={"ds": DS})
    signed_info = E.SignedInfo(
        E.CanonicalizationMethod(Algorithm=EXC_C14N),
        E.SignatureMethod(Algorithm=sig_uri),
        E.Reference(
            E.Transforms(E.Transform(Algorithm=ENVELOPED), E.Transform(Algorithm=EXC_C14N)),
            E.DigestMethod(Algorithm=digest_uri),
            E.DigestValue(digest),
            URI="#" + node_id,
        ),
    )
    signature = E.Signature(signed_info, E.SignatureValue(""))
    # Insert after the Issuer when there is one (the SAML schema's place).
    children = list(element)
    position = 1 if children and isinstance(children[0].tag, str) and children[0].tag.endswith("}Issuer") else 0
    element.insert(position, signature)
    value = key.sign(_c14n(signed_info, None), padding.PKCS1v15(), hash_class())
    signature.find(_SIGNATURE_VALUE).text = base64.b64encode(value).decode()
    return etree.tostring(root)


def self_test() -> None:
    """Verify a known-good signature and refuse known-bad ones; raise RuntimeError if the install is broken."""
    sig_uri = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    digest_uri = "http://www.w3.org/2001/04/xmlenc#sha256"
    key, cert = _self_test_material()
    _other_key, other_cert = _self_test_material()
    document = (
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r">'
        b'<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" Version="2.0">'
        b"<saml:Issuer>https://self-test.invalid/</saml:Issuer>\n  <saml:Subject><saml:NameID>alice</saml:NameID>"
        b"</saml:Subject></saml:Assertion></samlp:Response>"
    )
    good = sign(document, "_a", key, sig_uri, digest_uri)
    allowed_sigs, allowed_digests = {sig_uri}, {digest_uri}
    try:
        verify(good, "_a", [cert], allowed_sigs, allowed_digests)
    except VerificationError as exc:
        raise RuntimeError(f"the in-process signature verifier refuses a valid signature: {exc}") from None
    bad = {
        "changed signed text": good.replace(b">alice<", b">mallory<"),
        "another key": good,
        "algorithm not allowed": good,
    }
    for case, data in bad.items():
        certs = [other_cert] if case == "another key" else [cert]
        sigs = (
            {"http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"} if case == "algorithm not allowed" else allowed_sigs
        )
        try:
            verify(data, "_a", certs, sigs, allowed_digests)
        except VerificationError:
            continue
        raise RuntimeError(f"the in-process signature verifier accepts a bad signature ({case})")
