"""SAML schema validation on libxml2 (lxml's XMLSchema), compiled once per process.

The same XSD files pysaml2 validates with (``saml2/data/schemas``), resolved
locally (no network): the protocol schema and what it imports (assertion,
XML-DSig, XML-Enc). libxml2 validates an assertion in well under a
millisecond where pysaml2's pure-Python ``xmlschema`` takes several.
Compiled once, at start-up (``check_seam`` asks for it before any request):
libxml2 failed now and then to resolve an import when a schema was compiled
while other threads parsed. Validations take turns on one lock: a schema's
error log is per object, and a validation takes well under a tenth of a
millisecond.
"""

from __future__ import annotations

import threading
from importlib.resources import files

import saml2.data.schemas
from lxml import etree

_DIR = files(saml2.data.schemas)
_schema: etree.XMLSchema | None = None
_lock = threading.Lock()


class SchemaError(Exception):
    """The document does not match the SAML schema."""


class _LocalSchemas(etree.Resolver):
    """Every schemaLocation (often a w3.org URL) to the file of that name shipped with pysaml2."""

    def resolve(self, url, pubid, context):
        if url and url.endswith(".xsd"):
            path = _DIR.joinpath(url.rsplit("/", 1)[-1])
            if path.is_file():
                return self.resolve_filename(str(path), context)
        return None


def compile_schema() -> etree.XMLSchema:
    # The schema files are ours (pysaml2's): their internal entities are expanded; nothing is fetched.
    parser = etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=True)
    parser.resolvers.add(_LocalSchemas())
    document = etree.parse(str(_DIR.joinpath("saml-schema-protocol-2.0.xsd")), parser)
    return etree.XMLSchema(document)


def schema() -> etree.XMLSchema:
    """The process's compiled schema (compiled at the first call)."""
    global _schema
    with _lock:
        if _schema is None:
            _schema = compile_schema()
        return _schema


def validate(xml: str | bytes | etree._Element) -> None:
    """Raise SchemaError unless ``xml`` (a SAML protocol or assertion element) is schema-valid."""
    if isinstance(xml, etree._Element):
        root = xml
    else:
        from .verify import parse

        root = parse(xml)
    compiled = schema()
    with _lock:
        if compiled.validate(root):
            return
        error = str(compiled.error_log.last_error)
    raise SchemaError(error)
