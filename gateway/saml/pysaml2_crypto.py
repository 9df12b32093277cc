"""The one place that plugs the in-process verifier into pysaml2 (STYLE rule 17).

pysaml2 7.5 offers a ``CryptoBackend`` base class (public) but no public way
to hand one to a client: ``saml2.sigver.security_context`` builds either the
``xmlsec1`` backend or pyXMLSecurity's from ``crypto_backend`` in the config.
The gateway therefore configures ``crypto_backend = "XMLSecurity"`` (whose
constructor needs nothing installed) and replaces ``client.sec.crypto``, the
attribute through which ``SecurityContext.verify_signature`` calls
``validate_signature(signedtext, cert_file, cert_type, node_name, node_id)``.

The schema validation pysaml2 runs before each signature check
(``saml2.sigver.validate_doc_with_schema``, the pure-Python ``xmlschema``,
several ms per element) is replaced by libxml2's (:mod:`.schema`, the same
XSD files) while :func:`lxml_schema` is active, which the gateway's own
``check_response`` sets (through :func:`fast_path`); any other pysaml2 user
in the process keeps ``xmlschema``. When the caller has validated the whole
message as sent (``xmlguard.check_structure``), pysaml2's validation of its
own re-serialization of a part of it adds nothing and is skipped, and so is
the re-serialization itself: within ``fast_path(message_validated=True)``,
``str()`` of a pysaml2 object (the assertion handed to that validation, the
attribute statement in an eager debug-log f-string of
``AuthnResponse.get_identity``) gives a short label that is not XML, so
anything that took it for the message would fail to parse it and refuse.
(pysaml2's one other use of such text, decrypting an EncryptedAssertion, is
never reached: the guard refuses encrypted assertions first.)

pysaml2 turns a Response without a signature of its own (Entra signs the
assertion) into objects twice: ``Entity._parse_response`` first loads it
requiring a Response signature, to learn whether there is one, and loads it
again when ``correctly_signed_response`` refuses it for the missing
signature. Within :func:`fast_path` the second load gets the objects of the
first (``samlp.any_response_from_string`` of the same text; only for a
Response without a signature, which that refusal leaves untouched).

Before each signature check pysaml2 writes the IdP's metadata certificate
to a new temporary file (``saml2.sigver.make_temp``) for the backend to read
by name. Within :func:`fast_path` the file of a certificate is written once
and reused (a few, kept for the process): the content is the key, so a new
certificate from refreshed metadata gets its own file.

tests/test_saml_crypto_backend.py fails loudly when pysaml2 changes any of
these names or that signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import threading
from pathlib import Path

import saml2
import saml2.samlp
import saml2.sigver
from saml2.entity import Entity
from saml2.sigver import CryptoBackend, SecurityContext
from saml2.xml.schema import XMLSchemaError

from . import schema, verify

log = logging.getLogger("gateway.saml")

#: The pysaml2 config value whose constructor needs nothing installed.
PLACEHOLDER_BACKEND = "XMLSecurity"


class InProcessBackend(CryptoBackend):
    """pysaml2 CryptoBackend verifying with :mod:`gateway.saml.verify` (verification only)."""

    def __init__(self, signature_uris: set[str], digest_uris: set[str]):
        super().__init__()
        self.signature_uris = frozenset(signature_uris)
        self.digest_uris = frozenset(digest_uris)
        self._certs: dict[bytes, object] = {}
        self._lock = threading.Lock()
        #: The last refusal's reason (read by tests and logs).
        self.last_error: str | None = None

    @property
    def version(self):
        return "0.0.0"

    def _certificate(self, cert_file: str):
        data = Path(cert_file).read_bytes()
        cert = self._certs.get(data)
        if cert is None:
            cert = verify.load_certificate(data)
            with self._lock:
                if len(self._certs) > 64:
                    self._certs.clear()
                self._certs[data] = cert
        return cert

    def validate_signature(self, signedtext, cert_file, cert_type, node_name, node_id):
        """True when the signature of ``node_id`` verifies with the certificate in ``cert_file``; else False.

        ``cert_file`` is the file pysaml2 wrote from the IdP metadata (never a
        KeyInfo); ``node_name`` is not needed: the element is found by its ID.
        """
        try:
            verify.verify(signedtext, node_id, [self._certificate(cert_file)], self.signature_uris, self.digest_uris)
        except verify.VerificationError as exc:
            self.last_error = str(exc)
            log.info("signature refused: %s", exc)
            return False
        return True


def install(client, backend: InProcessBackend) -> None:
    """Make ``client`` (a pysaml2 Entity) verify signatures with ``backend``."""
    sec = client.sec
    if not isinstance(sec, SecurityContext) or not hasattr(sec, "crypto"):
        raise RuntimeError("pysaml2 changed: Entity.sec is no SecurityContext with a crypto backend")
    sec.crypto = backend


def check_seam() -> None:
    """Fail at start when pysaml2's seam is not the one this module was written for."""
    # The text is passed by position (named enctext in the base class), the rest by keyword.
    expected = ["cert_file", "cert_type", "node_name", "node_id"]
    found = list(inspect.signature(CryptoBackend.validate_signature).parameters)
    if len(found) != 6 or found[2:] != expected:
        raise RuntimeError(f"pysaml2 changed CryptoBackend.validate_signature: {found}")
    source = inspect.getsource(SecurityContext.verify_signature)
    if "self.crypto.validate_signature(" not in source:
        raise RuntimeError("pysaml2 changed SecurityContext.verify_signature: it no longer calls self.crypto")
    if "validate_doc_with_schema(str(item))" not in inspect.getsource(SecurityContext._check_signature):
        raise RuntimeError(
            "pysaml2 changed SecurityContext._check_signature: it no longer validates str(item) with"
            " validate_doc_with_schema"
        )
    if "to_string()" not in inspect.getsource(_original_str):
        raise RuntimeError("pysaml2 changed SamlBase.__str__: it no longer serializes with to_string")
    if "samlp.any_response_from_string(decoded_xml)" not in inspect.getsource(
        SecurityContext.correctly_signed_response
    ):
        raise RuntimeError("pysaml2 changed SecurityContext.correctly_signed_response: it no longer parses with samlp")
    parse = inspect.getsource(Entity._parse_response)
    if "response.require_response_signature = True" not in parse or parse.count("response.loads(xmlstr") != 2:
        raise RuntimeError(
            "pysaml2 changed Entity._parse_response: no longer a first load requiring a Response signature"
        )
    make_temp = inspect.signature(saml2.sigver.make_temp)
    if list(make_temp.parameters) != ["content", "suffix", "decode", "delete_tmpfiles"]:
        raise RuntimeError(f"pysaml2 changed saml2.sigver.make_temp: {list(make_temp.parameters)}")
    if 'make_temp(content, suffix=".pem", decode=False' not in inspect.getsource(SecurityContext._check_signature):
        raise RuntimeError("pysaml2 changed SecurityContext._check_signature: no longer writes the certificate so")
    schema.schema()  # the XSD files compile


_use_lxml_schema = contextvars.ContextVar("gateway_lxml_schema", default=False)
_original_schema_validate = saml2.sigver.validate_doc_with_schema


_message_validated = contextvars.ContextVar("gateway_message_validated", default=False)


def _validate_doc_with_schema(doc, validator=None):
    if validator is not None or not _use_lxml_schema.get():
        return _original_schema_validate(doc, validator) if validator is not None else _original_schema_validate(doc)
    if _message_validated.get():
        return None
    try:
        schema.validate(doc)
    except (schema.SchemaError, verify.VerificationError) as exc:
        raise XMLSchemaError({"doc": doc, "error": str(exc)}) from None
    return None


@contextlib.contextmanager
def lxml_schema():
    """Within this block, pysaml2's schema validation runs on libxml2 (this thread or task only)."""
    token = _use_lxml_schema.set(True)
    try:
        yield
    finally:
        _use_lxml_schema.reset(token)


_unsigned_responses = contextvars.ContextVar("gateway_unsigned_responses", default=None)
_original_any_response = saml2.samlp.any_response_from_string


def _any_response_from_string(xmlstr):
    kept = _unsigned_responses.get()
    if kept is None:
        return _original_any_response(xmlstr)
    response = kept.pop(xmlstr, None)
    if response is None:
        response = _original_any_response(xmlstr)
        if response is not None and response.signature is None:
            # Refused untouched by the first load (no Response signature); the retry takes it.
            kept[xmlstr] = response
    return response


_original_str = saml2.SamlBase.__str__


def _samlbase_str(self):
    if _message_validated.get() and _use_lxml_schema.get():
        # Not XML: nothing can mistake it for the message (see the module docstring).
        return f"[pysaml2 {type(self).__name__}: not re-serialized, the message was schema-validated as received]"
    return _original_str(self)


_original_make_temp = saml2.sigver.make_temp
#: Certificate PEM text -> its temporary file (kept open, so not deleted, while listed here or in use).
_pem_files: dict[bytes, object] = {}
_pem_lock = threading.Lock()
#: More certificates than an IdP's metadata lists at once (signing, rollover).
_PEM_FILES_KEPT = 16


def _make_temp(content, suffix="", decode=True, delete_tmpfiles=True):
    if suffix != ".pem" or decode or not _use_lxml_schema.get():
        return _original_make_temp(content, suffix, decode, delete_tmpfiles)
    key = content if isinstance(content, bytes) else content.encode("utf-8")
    found = _pem_files.get(key)
    if found is None:
        # delete_tmpfiles=True: the file goes when the last holder lets go of it.
        found = _original_make_temp(content, suffix, decode, True)
        with _pem_lock:
            if len(_pem_files) >= _PEM_FILES_KEPT:
                _pem_files.clear()
            _pem_files[key] = found
    return found


@contextlib.contextmanager
def fast_path(*, message_validated: bool = False):
    """Within this block (this thread or task only): schema validation on
    libxml2 (:func:`lxml_schema`) and a Response text turned into objects once.

    ``message_validated``: the caller validated the whole message, as sent,
    against the schema; pysaml2's validations of its parts are skipped.
    """
    token = _unsigned_responses.set({})
    validated = _message_validated.set(message_validated)
    try:
        with lxml_schema():
            yield
    finally:
        _message_validated.reset(validated)
        _unsigned_responses.reset(token)


def _replace(module, name: str, original, dispatcher) -> None:
    """Put ``dispatcher`` in place of ``original`` as ``module.name`` (a module or class attribute)."""
    current = getattr(module, name, None)
    if current is None:
        raise RuntimeError(f"pysaml2 changed: {module.__name__}.{name} is gone")
    if current is not dispatcher:
        if current is not original:
            raise RuntimeError(f"{module.__name__}.{name} was replaced by someone else")
        setattr(module, name, dispatcher)


def install_schema_validation() -> None:
    """Put the dispatchers in place of pysaml2's validator, response parser,
    temporary-file writer and object-to-text conversion (idempotent)."""
    _replace(saml2.sigver, "validate_doc_with_schema", _original_schema_validate, _validate_doc_with_schema)
    _replace(saml2.samlp, "any_response_from_string", _original_any_response, _any_response_from_string)
    _replace(saml2.sigver, "make_temp", _original_make_temp, _make_temp)
    _replace(saml2.SamlBase, "__str__", _original_str, _samlbase_str)
