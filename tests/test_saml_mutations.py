"""A corpus of seeded mutations of validly signed Entra-shaped responses, each posted to /saml/acs.

Every mutation is refused with a 400 or 403 refusal page (never a 500) and
signs nobody in; the unmutated originals are then accepted, which shows the
refusals were the mutations' doing (and that no refused mutation used up the
assertion's id). Deterministic: the corpus is drawn from fixed seeds.

Two originals, IdP-initiated so one signed response serves every mutation:
the assertion signed (what Entra sends by default), and the response and the
assertion both signed. The kinds of mutation:

* a byte changed in signed content (kept only if the signed element's
  canonical form changes: a quote or a space between attributes that
  canonicalization erases is no mutation);
* an element or an attribute deleted, an element duplicated, two adjacent
  elements swapped (in signed content, or required by the schema);
* signature wrapping: a forged assertion beside, around or inside the
  signed one, the signature moved onto the forgery;
* comments injected (in the NameID, attribute values, between elements);
* encoding declarations other than UTF-8, and documents re-encoded;
* namespace tricks (namespaces renamed, a default namespace put on a
  signed element, the signature's namespace changed);
* the document truncated; its base64 damaged.

Mutations outside signed content that a correct gateway would accept (the
KeyInfo, which is not signed and not used: the key comes from metadata;
the Response's own attributes when only the assertion is signed) are not
drawn.
"""

from __future__ import annotations

import base64
import copy
import random
import re

import pytest
from lxml import etree

from saml_support import SAML, SAMLP, b64

DS = "http://www.w3.org/2000/09/xmldsig#"
SEED = 16
EVIL = "mallory@evil.example"


@pytest.fixture
def acs_app(make_app):
    return make_app(**{"saml.allow_idp_initiated": "true"})


@pytest.fixture
def originals(idp):
    """(name, xml) of the two validly signed IdP-initiated responses."""
    return [
        ("assertion-signed", idp.response(None, name_id="alice@example.com")),
        ("both-signed", idp.response(None, name_id="bob@example.com", sign_response=True)),
    ]


# ---------------------------------------------------------------- helpers


def _parse(xml: bytes):
    return etree.fromstring(xml, etree.XMLParser(resolve_entities=False, remove_blank_text=False))


def _assertion(root):
    return root.find(f"{{{SAML}}}Assertion")


def _signed_roots(root, response_signed: bool):
    """The elements whose content a signature covers."""
    return [root] if response_signed else [_assertion(root)]


def _canonical(xml: bytes, response_signed: bool):
    try:
        root = _parse(xml)
    except etree.XMLSyntaxError:
        return None
    found = _signed_roots(root, response_signed)
    if not found or found[0] is None:
        return None
    return [etree.tostring(e, method="c14n", exclusive=True, with_comments=True) for e in found] + [
        etree.tostring(root, method="c14n", exclusive=True, with_comments=True)
    ]


def _in_key_info(element) -> bool:
    while element is not None:
        if element.tag == f"{{{DS}}}KeyInfo":
            return True
        element = element.getparent()
    return False


def _signed_elements(root, response_signed: bool):
    """Elements inside signed content, less the KeyInfo (not signed, and not used)."""
    out = []
    for top in _signed_roots(root, response_signed):
        out += [e for e in top.iter() if isinstance(e.tag, str) and not _in_key_info(e)]
    return out


def _twin(tree, root, element):
    """In the copy ``tree`` of ``root``, the element at ``element``'s place."""
    return list(tree.iter())[list(root.iter()).index(element)]


def _serialize(root) -> bytes:
    return etree.tostring(root)


def _spans_outside_key_info(text: str, start: int, end: int) -> list[int]:
    """Offsets in [start, end) that are not inside a KeyInfo element."""
    hidden = [(m.start(), m.end()) for m in re.finditer(r"<ds:KeyInfo>.*?</ds:KeyInfo>", text, re.S)]
    return [i for i in range(start, end) if not any(a <= i < b for a, b in hidden)]


# ---------------------------------------------------------------- mutations of one original


def mutations(xml: str, response_signed: bool, rng: random.Random):
    """(label, body) pairs: body is the XML bytes, or ("raw", SAMLResponse text) for base64 damage."""
    data = xml.encode()
    original = _canonical(data, response_signed)
    out: list[tuple[str, object]] = []

    # Where signed content lies in the text.
    if response_signed:
        lo, hi = 0, len(xml)
    else:
        lo = xml.index("<Assertion")
        hi = xml.index("</Assertion>") + len("</Assertion>")
    flippable = _spans_outside_key_info(xml, lo, hi)

    # byte changes in signed content that change its canonical form
    flips = 0
    while flips < 70:
        where = rng.choice(flippable)
        changed = bytearray(data)
        changed[where] ^= rng.randrange(1, 256)
        if _canonical(bytes(changed), response_signed) == original:
            continue  # canonicalization erases it: not a change of signed content
        out.append((f"flip@{where}", bytes(changed)))
        flips += 1

    root = _parse(data)
    elements = _signed_elements(root, response_signed)
    required_outside = (
        [] if response_signed else [e for e in root if e.tag in (f"{{{SAMLP}}}Status", f"{{{SAML}}}Assertion")]
    )

    # element deletions (never the root; never the response's own signature when the assertion's remains)
    candidates = [e for e in elements + required_outside if e.getparent() is not None]
    if response_signed:
        candidates = [e for e in candidates if not (e.tag == f"{{{DS}}}Signature" and e.getparent() is root)]
    for element in rng.sample(candidates, min(30, len(candidates))):
        tree = copy.deepcopy(root)
        target = _twin(tree, root, element)
        target.getparent().remove(target)
        out.append((f"delete {target.tag}", _serialize(tree)))

    # attribute deletions: on signed elements, and the Response's required ones
    attributes = [(e, a) for e in elements for a in e.attrib]
    attributes += [(root, a) for a in ("ID", "Version", "IssueInstant") if not response_signed]
    for element, name in rng.sample(attributes, min(30, len(attributes))):
        tree = copy.deepcopy(root)
        target = _twin(tree, root, element)
        del target.attrib[name]
        out.append((f"delete @{name} of {target.tag}", _serialize(tree)))

    # duplications and swaps of adjacent siblings
    for element in rng.sample(elements, min(20, len(elements))):
        if element.getparent() is None:
            continue
        tree = copy.deepcopy(root)
        target = _twin(tree, root, element)
        target.addnext(copy.deepcopy(target))
        out.append((f"duplicate {target.tag}", _serialize(tree)))
    pairs = [
        (e, e.getnext())
        for e in elements
        if e.getnext() is not None and e.getnext() in elements and etree.tostring(e) != etree.tostring(e.getnext())
    ]
    for first, _second in rng.sample(pairs, min(20, len(pairs))):
        tree = copy.deepcopy(root)
        target = _twin(tree, root, first)
        following = target.getnext()
        following.addnext(target)
        out.append((f"swap {target.tag}", _serialize(tree)))

    out += wrapping(root)
    out += comments(xml, rng)
    out += encodings(xml)
    out += namespaces(xml, response_signed)

    # truncation anywhere
    for cut in sorted(rng.sample(range(1, len(data) - 1), 25)):
        out.append((f"truncate@{cut}", data[:cut]))

    # base64 damage
    encoded = b64(xml)
    for _ in range(12):
        at = rng.randrange(len(encoded) - 1)
        out.append((f"b64 drop@{at}", ("raw", encoded[:at] + encoded[at + 1 :])))
        out.append((f"b64 junk@{at}", ("raw", encoded[:at] + rng.choice("!*%$~é\x00") + encoded[at:])))
    out.append(("b64 cut in a quad", ("raw", encoded[: (len(encoded) // 2) // 4 * 4 + 2])))
    out.append(("b64 empty", ("raw", "")))
    out.append(("b64 padding only", ("raw", "====")))
    out.append(("b64 of nothing XML", ("raw", base64.b64encode(b"not xml at all").decode())))
    return out


def wrapping(root) -> list[tuple[str, bytes]]:
    """XML signature wrapping: the signed assertion kept, a forged one where the identity is read."""
    out = []
    signed = _assertion(root)

    def forged(keep_signature: bool, new_id: bool = True):
        evil = copy.deepcopy(signed)
        evil.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID").text = EVIL
        if new_id:
            evil.set("ID", "_evil" + evil.get("ID")[1:])
        if not keep_signature:
            signature = evil.find(f"{{{DS}}}Signature")
            if signature is not None:
                evil.remove(signature)
        return evil

    def variant(label, build):
        tree = copy.deepcopy(root)
        build(tree, _assertion(tree))
        out.append((f"wrap: {label}", _serialize(tree)))

    variant("forgery before the signed assertion", lambda t, a: a.addprevious(forged(False)))
    variant("forgery after the signed assertion", lambda t, a: a.addnext(forged(False)))
    variant("forgery with the same ID before", lambda t, a: a.addprevious(forged(False, new_id=False)))
    variant("forgery carrying the signature", lambda t, a: a.addprevious(forged(True, new_id=False)))

    def into_extensions(tree, a):
        extensions = etree.Element(f"{{{SAMLP}}}Extensions")
        a.getparent().remove(a)
        extensions.append(a)
        tree.insert(1, extensions)
        tree.append(forged(False))

    variant("signed assertion in Extensions, forgery in its place", into_extensions)

    def inside_forgery(tree, a):
        evil = forged(False)
        a.getparent().replace(a, evil)
        evil.append(a)

    variant("signed assertion inside the forgery", inside_forgery)

    def in_signature_object(tree, a):
        evil = forged(True, new_id=False)
        signature = evil.find(f"{{{DS}}}Signature")
        obj = etree.SubElement(signature, f"{{{DS}}}Object")
        a.getparent().replace(a, evil)
        obj.append(a)

    variant("signed assertion in the forgery's ds:Object", in_signature_object)

    def in_advice(tree, a):
        evil = forged(False)
        advice = etree.Element(f"{{{SAML}}}Advice")
        evil.find(f"{{{SAML}}}Conditions").addnext(advice)
        a.getparent().replace(a, evil)
        advice.append(a)

    variant("signed assertion in the forgery's Advice", in_advice)

    def in_subject_confirmation(tree, a):
        evil = forged(False)
        data = evil.find(f"{{{SAML}}}Subject/{{{SAML}}}SubjectConfirmation/{{{SAML}}}SubjectConfirmationData")
        a.getparent().replace(a, evil)
        data.append(a)

    variant("signed assertion in the forgery's SubjectConfirmationData", in_subject_confirmation)

    def second_response(tree, a):
        outer = etree.Element(tree.tag, dict(tree.attrib), nsmap=tree.nsmap)
        outer.set("ID", "_outer" + tree.get("ID")[1:])
        for child in list(tree):
            if child.tag != f"{{{SAML}}}Assertion" and child.tag != f"{{{DS}}}Signature":
                outer.append(copy.deepcopy(child))
        outer.append(forged(False))
        outer.append(copy.deepcopy(tree))
        tree.clear()
        tree.tag = outer.tag
        for k, v in outer.attrib.items():
            tree.set(k, v)
        for child in outer:
            tree.append(child)

    variant("the whole signed response inside a forged one", second_response)
    return out


def comments(xml: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """Comments that exclusive canonicalization ignores, so the signature still holds."""
    out = []
    name_at = xml.index("alice@example.com") if "alice@example.com" in xml else xml.index("bob@example.com")
    for offset in (0, 5, 6, 10, 17):
        at = name_at + offset
        out.append((f"comment in NameID@{offset}", (xml[:at] + "<!---->" + xml[at:]).encode()))
    out.append(
        (
            "comment suffix in NameID",
            xml.replace("@example.com</NameID>", "@example.com<!---->.evil.example</NameID>", 1).encode(),
        )
    )
    texts = [m.end() for m in re.finditer(r">(?=[^<])", xml)]
    gaps = [m.start() for m in re.finditer(r"><", xml)]
    for at in rng.sample(texts, min(8, len(texts))) + rng.sample(gaps, min(8, len(gaps))):
        out.append((f"comment@{at}", (xml[:at] + "<!-- x -->" + xml[at:]).encode()))
    out.append(("comment before the root", ("<!-- x -->" + xml).encode()))
    return out


def encodings(xml: str) -> list[tuple[str, bytes]]:
    """Anything but UTF-8 is refused as malformed, whatever the bytes."""
    out = []
    for name in (
        "ISO-8859-1",
        "US-ASCII",
        "windows-1252",
        "UTF-7",
        "UTF-16",
        "UTF-32",
        "Shift_JIS",
        "EBCDIC-CP-US",
        "x-evil",
    ):
        out.append((f"declared {name}", f'<?xml version="1.0" encoding="{name}"?>{xml}'.encode()))
    for codec, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-32-le", b"\xff\xfe\x00\x00")):
        out.append((f"re-encoded {codec} with BOM", bom + xml.encode(codec)))
        out.append((f"re-encoded {codec} without BOM", xml.encode(codec)))
    out.append(("re-encoded cp037", f'<?xml version="1.0" encoding="cp037"?>{xml}'.encode("cp037")))
    out.append(
        (
            "UTF-7 payload",
            ('<?xml version="1.0" encoding="UTF-7"?>' + xml.replace("<NameID", "+ADw-NameID", 1)).encode(),
        )
    )
    return out


def namespaces(xml: str, response_signed: bool) -> list[tuple[str, bytes]]:
    out = []
    out.append(("assertion namespace renamed", xml.replace(f'xmlns="{SAML}" ID=', f'xmlns="{SAML}x" ID=', 1).encode()))
    out.append(
        (
            "SAML 1.1 assertion namespace",
            xml.replace(f'xmlns="{SAML}" ID=', 'xmlns="urn:oasis:names:tc:SAML:1.0:assertion" ID=', 1).encode(),
        )
    )
    out.append(
        (
            "protocol namespace renamed",
            xml.replace(f'xmlns:samlp="{SAMLP}"', 'xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol"', 1).encode(),
        )
    )
    out.append(("signature namespace changed", xml.replace(f'xmlns:ds="{DS}"', f'xmlns:ds="{DS}x"').encode()))
    out.append(("default namespace on NameID", xml.replace("<NameID ", '<NameID xmlns="urn:evil" ', 1).encode()))
    out.append(
        (
            "default namespace on AttributeStatement",
            xml.replace("<AttributeStatement>", '<AttributeStatement xmlns="urn:evil">', 1).encode(),
        )
    )
    out.append(
        (
            "Subject under a prefix of its own",
            xml.replace("<Subject>", f'<s:Subject xmlns:s="{SAML}">', 1)
            .replace("</Subject>", "</s:Subject>", 1)
            .encode(),
        )
    )
    out.append(("Issuer in another namespace", xml.replace("<Issuer>", '<Issuer xmlns="urn:evil">', 1).encode()))
    out.append(
        ("empty default namespace on Conditions", xml.replace("<Conditions ", '<Conditions xmlns="" ', 1).encode())
    )
    if response_signed:
        # Exclusive canonicalization keeps prefixes, so a renamed prefix breaks the response's signature.
        out.append(
            ("protocol prefix renamed", xml.replace("samlp:", "p:").replace("xmlns:samlp=", "xmlns:p=").encode())
        )
    return out


# ---------------------------------------------------------------- the test


def test_every_mutation_of_a_signed_response_is_refused_and_signs_nobody_in(acs_app, originals):
    rng = random.Random(SEED)
    corpus = []
    for name, xml in originals:
        corpus += [(f"{name}: {label}", body) for label, body in mutations(xml, name == "both-signed", rng)]
    assert len(corpus) >= 400, len(corpus)
    seen = set()
    problems = []
    reasons: dict[str, int] = {}
    for label, body in corpus:
        value = body[1] if isinstance(body, tuple) else b64(body)
        if value in seen:
            continue
        seen.add(value)
        response = acs_app.post("/saml/acs", {"SAMLResponse": value}, status="*", expect_errors=True)
        # The ACS's refusal page (its reason in X-Reason), or the guard's 400 for a form it
        # refuses before any view (a NUL in a field), which names its reference too.
        reason = response.headers.get("X-Reason") or ("guard" if response.content_type == "text/plain" else None)
        reasons[reason] = reasons.get(reason, 0) + 1
        page = response.content_type == "text/html" or (reason == "guard" and "Reference: " in response.text)
        if response.status_int not in (400, 403) or not reason or not page:
            problems.append(f"{label}: {response.status_int} {reason} {response.text[:200]!r}")
        if "gateway_session" in acs_app.cookies:
            problems.append(f"{label}: signed someone in")
            acs_app.reset()
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} of {len(seen)})"
    assert len(seen) >= 400
    acs_app.get("/whoami", status=401)
    # The refusals were the mutations' doing: each original is accepted, once.
    for _name, xml in originals:
        acs_app.reset()
        acs_app.post("/saml/acs", {"SAMLResponse": b64(xml)}, status=303)
        assert acs_app.get("/whoami").json["userName"] in ("alice@example.com", "bob@example.com")
    # Refused for many different reasons, not one check failing everything.
    assert len(reasons) >= 8, reasons
