"""Checks on the raw XML that pysaml2 does not make, run before pysaml2 sees it.

Two layers:

* :func:`safe_parse` refuses DTDs, entity declarations, comments and
  processing instructions while parsing with expat (so no entity is ever
  expanded), then builds an ElementTree. Comments are refused outright rather
  than dropped: ``alice@example.com<!---->.evil.example`` is the classic
  trick against parsers that read only the first text node after a comment,
  and Entra never sends comments.
* :func:`check_structure` pins down where the one assertion and its
  signatures may be, so that the element pysaml2 verifies is the element the
  identity is read from (XML signature wrapping): the root is a Response,
  there is exactly one Assertion in the whole document and it is a child of
  the root, every ID is unique, every Signature is an enveloped signature of
  its parent with one same-document Reference to the parent's ID, and only
  allowed signature, digest, canonicalization and transform algorithms occur;
  and the message, as sent, is valid against the SAML schema.
"""

from __future__ import annotations

import re
import weakref
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass

from .errors import SamlRejection

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"

RESPONSE = f"{{{SAMLP}}}Response"
ASSERTION = f"{{{SAML}}}Assertion"
ENCRYPTED_ASSERTION = f"{{{SAML}}}EncryptedAssertion"
SIGNATURE = f"{{{DS}}}Signature"
STATUS = f"{{{SAMLP}}}Status"
ISSUER = f"{{{SAML}}}Issuer"

#: Canonicalization and transforms of SAML's signature profile; the
#: "#WithComments" variants are left out on purpose.
ALLOWED_TRANSFORMS = frozenset(
    {
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    }
)

#: Largest SAMLResponse accepted (decoded): Entra's responses with 150 groups
#: are around 20 KB; this leaves room and bounds the parsing work.
MAX_XML_BYTES = 512 * 1024


def _refuse(code: str, message: str, detail: str = "") -> SamlRejection:
    return SamlRejection(code, message, detail=detail)


def safe_parse(data: bytes, allow_comments: bool = False) -> ET.Element:
    """Parse SAML XML, refusing DTDs, entities, comments and processing instructions.

    ``allow_comments`` is for metadata files, which people edit by hand; the
    comments are dropped.
    """
    if len(data) > MAX_XML_BYTES:
        raise _refuse("too_large", "The sign-in message is too large.", f"{len(data)} bytes")
    _check_encoding(data)
    builder = ET.TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")

    def refuse_dtd(*_args):
        raise _refuse("xml_dtd", "The sign-in message contains a DTD, which is not allowed.")

    def refuse_entity(*_args):
        raise _refuse("xml_entity", "The sign-in message declares or uses XML entities, which is not allowed.")

    def refuse_comment(_text):
        raise _refuse("xml_comment", "The sign-in message contains an XML comment, which is not allowed.")

    def refuse_pi(_target, _data):
        raise _refuse("xml_pi", "The sign-in message contains an XML processing instruction.")

    def start(tag, attrs):
        builder.start(_qname(tag), {_qname(k): v for k, v in attrs.items()})

    def end(tag):
        builder.end(_qname(tag))

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    parser.SkippedEntityHandler = refuse_entity
    parser.DefaultHandler = _default_handler(refuse_entity)
    if not allow_comments:
        parser.CommentHandler = refuse_comment
    parser.ProcessingInstructionHandler = refuse_pi
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except SamlRejection:
        raise
    except (xml.parsers.expat.ExpatError, ValueError) as exc:  # ValueError: an encoding expat cannot read
        raise _refuse("malformed", "The sign-in message is not well-formed XML.", str(exc)) from None
    root = builder.close()
    _parsed_from[root] = data
    return root


#: The bytes each live tree of :func:`safe_parse` was parsed from (for :func:`_check_schema`).
_parsed_from: weakref.WeakKeyDictionary[ET.Element, bytes] = weakref.WeakKeyDictionary()


_DECLARED_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")


def _check_encoding(data: bytes) -> None:
    """UTF-8 only (SAML messages are; Entra's are): a byte-order mark of
    UTF-16 or UTF-32, a NUL in the first bytes (UTF-16 or -32 without one)
    or a declared encoding other than UTF-8 is refused as malformed rather
    than decoded some other way (expat would read UTF-7 and UTF-16, and
    raise on UTF-32)."""
    head = data[:4]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise _refuse("malformed", "The sign-in message is not UTF-8 XML.", "byte-order mark or NUL of UTF-16/32")
    declared = _DECLARED_ENCODING.match(data[:200])
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise _refuse(
            "malformed",
            "The sign-in message is not UTF-8 XML.",
            f"declared encoding {declared.group(1).decode('ascii', 'replace')}",
        )


def _default_handler(refuse_entity):
    # With a DefaultHandler set, expat reports references to undeclared
    # entities here instead of expanding them; the predefined ones (&amp; ...)
    # and character references never reach it.
    def handler(data):
        if data.startswith("&") and data.endswith(";"):
            refuse_entity()

    return handler


def _qname(name: str) -> str:
    # expat gives "uri}local"; ElementTree wants "{uri}local".
    return "{" + name if "}" in name else name


@dataclass(frozen=True)
class Structure:
    """What the structural check found, for the checks that follow."""

    root: ET.Element
    assertion: ET.Element | None
    response_signed: bool
    assertion_signed: bool
    #: The message as sent was validated against the SAML schema.
    schema_checked: bool = False


def check_structure(root: ET.Element, allowed_signature_uris: set[str], allowed_digest_uris: set[str]) -> Structure:
    """Refuse every shape in which the signed element and the read element could differ."""
    if root.tag != RESPONSE:
        raise _refuse("not_a_response", "The message is not a SAML Response.", root.tag)

    check_unique_ids(root)
    # The schema (saml-schema-protocol-2.0, StatusResponseType) allows one
    # Status and at most one Issuer: a second one is a place for a reader and
    # a checker to disagree.
    children = [child.tag for child in root]
    if children.count(STATUS) != 1 or children.count(ISSUER) > 1:
        raise _refuse(
            "malformed",
            "The sign-in message is not a valid SAML Response.",
            f"{children.count(STATUS)} Status and {children.count(ISSUER)} Issuer elements in the Response",
        )

    schema_checked = _check_schema(root)

    assertions = [e for e in root.iter() if e.tag in (ASSERTION, ENCRYPTED_ASSERTION)]
    if any(e.tag == ENCRYPTED_ASSERTION for e in assertions):
        raise _refuse(
            "encrypted_assertion",
            "The IdP encrypted the assertion; this gateway does not use token encryption. Turn it off in Entra.",
        )
    if len(assertions) > 1:
        raise _refuse("multiple_assertions", "The sign-in message holds more than one assertion.", str(len(assertions)))
    assertion = assertions[0] if assertions else None
    if assertion is not None and assertion not in list(root):
        raise _refuse("assertion_location", "The assertion is not where the SAML profile puts it.")

    response_signed = assertion_signed = False
    parents = {child: parent for parent in root.iter() for child in parent}
    for signature in (e for e in root.iter() if e.tag == SIGNATURE):
        parent = parents.get(signature)
        if parent is root:
            response_signed = True
        elif parent is not None and parent is assertion:
            assertion_signed = True
        else:
            raise _refuse("signature_location", "A signature is in a place the SAML profile does not allow.")
        _check_signature(signature, parent, allowed_signature_uris, allowed_digest_uris)
    return Structure(root, assertion, response_signed, assertion_signed, schema_checked)


def _check_schema(root: ET.Element) -> bool:
    """The message as sent, against the SAML schema (libxml2, :mod:`.schema`).

    pysaml2 validates its own re-serialization of what it parsed, which
    writes every element in schema order: a Signature whose SignatureValue
    came before its SignedInfo, say, passed (tests/test_saml_mutations.py).
    The bytes :func:`safe_parse` read are validated, not ElementTree's
    re-serialization, which drops the namespace declarations that only
    attribute values use (``xsi:type="xs:string"``).
    """
    from .schema import SchemaError, validate

    raw = _parsed_from.get(root)
    if raw is None:  # a tree not from safe_parse: nothing to check it against
        return False
    try:
        validate(raw)
    except SchemaError as exc:
        raise _refuse("malformed", "The sign-in message is not a valid SAML Response.", str(exc)) from None
    return True


def check_unique_ids(root: ET.Element) -> None:
    """Refuse a document in which two elements share an ID (the basis of signature wrapping)."""
    ids: set[str] = set()
    for element in root.iter():
        for name in ("ID", "Id", "id"):
            value = element.get(name)
            if value is None:
                continue
            if value in ids:
                raise _refuse("duplicate_id", "The message is malformed (an ID is used twice).", value)
            ids.add(value)


def check_enveloped_signature(
    signature: ET.Element, parent: ET.Element, sig_uris: set[str], digest_uris: set[str]
) -> None:
    """Refuse a signature that does not cover exactly ``parent``, or uses an algorithm not allowed."""
    _check_signature(signature, parent, sig_uris, digest_uris)


def _check_signature(signature: ET.Element, parent: ET.Element, sig_uris: set[str], digest_uris: set[str]) -> None:
    signed_info = signature.find(f"{{{DS}}}SignedInfo")
    if signed_info is None:
        raise _refuse("signature_invalid", "A signature is malformed.", "no SignedInfo")
    references = signed_info.findall(f"{{{DS}}}Reference")
    parent_id = parent.get("ID")
    if len(references) != 1 or not parent_id or references[0].get("URI") != "#" + parent_id:
        raise _refuse(
            "signature_reference",
            "A signature does not cover the element it belongs to.",
            f"references={[r.get('URI') for r in references]} parent={parent_id}",
        )
    method = signed_info.find(f"{{{DS}}}SignatureMethod")
    sig_alg = method.get("Algorithm") if method is not None else None
    if sig_alg not in sig_uris:
        raise _refuse(
            "signature_algorithm",
            "The IdP signed with an algorithm this gateway does not accept (see saml.allowed_signature_algorithms).",
            str(sig_alg),
        )
    digest = references[0].find(f"{{{DS}}}DigestMethod")
    digest_alg = digest.get("Algorithm") if digest is not None else None
    if digest_alg not in digest_uris:
        raise _refuse(
            "digest_algorithm",
            "The IdP used a digest algorithm this gateway does not accept (see saml.allowed_signature_algorithms).",
            str(digest_alg),
        )
    c14n = signed_info.find(f"{{{DS}}}CanonicalizationMethod")
    algorithms = [c14n.get("Algorithm") if c14n is not None else None]
    algorithms += [t.get("Algorithm") for t in references[0].iter(f"{{{DS}}}Transform")]
    for algorithm in algorithms:
        if algorithm not in ALLOWED_TRANSFORMS:
            raise _refuse("signature_transform", "A signature uses a transform that is not allowed.", str(algorithm))
