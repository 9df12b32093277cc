"""The IdP's federation metadata: fetched, checked, refreshed, and kept when a refresh fails.

The source is ``saml.idp_metadata`` (a file or an https URL) or, when that is
empty, the IdP profile's ``default_metadata`` (the development IdP). Nothing
happens at import or start-up: the first request that needs the metadata
loads it, so ``gateway CONFIG migrate`` works before the schema exists.

Every successful fetch that parses as usable IdP metadata becomes the current
copy and is saved in the ``idp_metadata`` table; a failed or invalid refresh
keeps the current copy (or, after a restart, the saved one), logs the failure
and records it for ``gateway CONFIG check``. All signing certificates are
kept, so a response signed with Entra's new (rollover) certificate verifies
before anyone touches the gateway.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import sqlalchemy as sa
from cryptography import x509

from ..db.models import IdpMetadata, utcnow
from ..metrics import instruments
from .errors import SamlRejection
from .xmlguard import safe_parse

log = logging.getLogger("gateway.saml.metadata")

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BOM = b"\xef\xbb\xbf"
FETCH_TIMEOUT = 15  # seconds; a hung metadata server must not hang a sign-in for long
MAX_METADATA_BYTES = 2 * 1024 * 1024


class MetadataError(Exception):
    """The metadata could not be fetched or is not usable IdP metadata."""


@dataclass(frozen=True)
class SigningCert:
    der: bytes
    subject: str
    not_after: dt.datetime

    @property
    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.der).hexdigest()[:16]


@dataclass(frozen=True)
class IdpInfo:
    entity_id: str
    sso_redirect_url: str
    slo_redirect_url: str | None
    certs: tuple[SigningCert, ...]
    xml: str = field(repr=False)


def parse_idp_metadata(data: bytes | str) -> IdpInfo:
    """Check that ``data`` is IdP metadata we can use; raise MetadataError otherwise."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    # Entra's per-app metadata starts with a UTF-8 byte-order mark.
    while data.startswith(BOM):
        data = data[len(BOM) :]
    data = data.strip()
    try:
        root = safe_parse(data, allow_comments=True)
    except SamlRejection as exc:
        raise MetadataError(f"not usable XML: {exc.code} {exc.detail}".strip()) from None
    descriptors = [root] if root.tag == f"{{{MD}}}EntityDescriptor" else list(root.iter(f"{{{MD}}}EntityDescriptor"))
    descriptors = [d for d in descriptors if d.find(f"{{{MD}}}IDPSSODescriptor") is not None]
    if len(descriptors) != 1:
        raise MetadataError(f"expected one EntityDescriptor with an IDPSSODescriptor, found {len(descriptors)}")
    entity = descriptors[0]
    entity_id = entity.get("entityID") or ""
    if not entity_id:
        raise MetadataError("the EntityDescriptor has no entityID")
    idp = entity.find(f"{{{MD}}}IDPSSODescriptor")
    sso = _location(idp, "SingleSignOnService")
    if not sso:
        raise MetadataError("no SingleSignOnService with the HTTP-Redirect binding")
    certs = []
    for key in idp.findall(f"{{{MD}}}KeyDescriptor"):
        if key.get("use", "signing") != "signing":
            continue
        for text in key.iter(f"{{{DS}}}X509Certificate"):
            try:
                der = base64.b64decode("".join((text.text or "").split()), validate=True)
                cert = x509.load_der_x509_certificate(der)
            except ValueError as exc:
                raise MetadataError(f"a signing certificate does not parse: {exc}") from None
            certs.append(SigningCert(der, cert.subject.rfc4514_string(), cert.not_valid_after_utc))
    if not certs:
        raise MetadataError("no signing certificate in the IDPSSODescriptor")
    return IdpInfo(entity_id, sso, _location(idp, "SingleLogoutService"), tuple(certs), data.decode("utf-8"))


def _location(idp, service: str) -> str | None:
    for element in idp.findall(f"{{{MD}}}{service}"):
        if element.get("Binding") == REDIRECT and element.get("Location"):
            # Microsoft's own sample has a stray space before "/saml2".
            return "".join(element.get("Location").split())
    return None


def fetch(source: str) -> bytes:
    """Read a metadata file or download an https URL."""
    try:
        if "://" in source:
            request = urllib.request.Request(source, headers={"User-Agent": "entra-identity-gateway"})
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 - https checked in settings
                data = response.read(MAX_METADATA_BYTES + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"cannot read {source}: {exc}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"{source} is larger than {MAX_METADATA_BYTES} bytes")
    return data


class MetadataStore:
    """The current IdP metadata of one app instance (thread-safe)."""

    def __init__(self, registry, source: str, refresh_seconds: int, default=None):
        self.registry = registry
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.default = default  # callable(registry) -> str | None, from the IdP profile
        self.info: IdpInfo | None = None
        self.origin = ""  # "source", "database" or "profile"
        self.fetched_at: dt.datetime | None = None
        self.last_error: str | None = None
        self._next_refresh = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ public

    def current(self) -> IdpInfo | None:
        """The metadata in force, loading or refreshing it when due."""
        if self.info is None:
            with self._lock:
                if self.info is None:
                    self._refresh(first=True)
        elif time.monotonic() >= self._next_refresh and self._lock.acquire(blocking=False):
            # One thread refreshes; the others keep using the current copy.
            try:
                self._refresh(first=False)
            finally:
                self._lock.release()
        return self.info

    def refresh_now(self) -> IdpInfo | None:
        with self._lock:
            self._refresh(first=self.info is None)
        return self.info

    def status(self) -> tuple[str | None, list[str]]:
        """(readiness problem or None, warnings) for /readyz and ``check``."""
        info = self.current()
        warnings = []
        if info is None:
            return (f"no usable IdP metadata: {self.last_error or 'not loaded'}", warnings)
        if self.last_error:
            when = self.fetched_at.isoformat(timespec="seconds") if self.fetched_at else "an earlier run"
            warnings.append(f"refresh failed ({self.last_error}); using the copy from {when} ({self.origin})")
        return (None, warnings)

    # ------------------------------------------------------------ internals

    def _refresh(self, first: bool) -> None:
        self._next_refresh = time.monotonic() + self.refresh_seconds
        try:
            if self.source:
                info = parse_idp_metadata(fetch(self.source))
                origin = "source"
            else:
                xml = self.default(self.registry) if self.default else None
                if not xml:
                    raise MetadataError("saml.idp_metadata is empty and the IdP profile provides none")
                info = parse_idp_metadata(xml)
                origin = "profile"
        except MetadataError as exc:
            instruments.METADATA_FAILURES.inc()
            self.last_error = str(exc)
            log.error("IdP metadata refresh from %s failed: %s", self.source or "the IdP profile", exc)
            if self.source:
                self._record_failure(str(exc))
                if self.info is None:
                    self._load_saved()
            return
        if self.info is None or info.xml != self.info.xml:
            log.info(
                "IdP metadata loaded from %s: entity %s, %d signing certificate(s)",
                self.source or "the IdP profile",
                info.entity_id,
                len(info.certs),
            )
        self.info, self.origin, self.fetched_at, self.last_error = info, origin, utcnow(), None
        instruments.METADATA_REFRESHED.set(self.fetched_at.timestamp())
        if self.source:
            self._save(info)

    def _session(self):
        return self.registry.dbsession_factory()

    def _save(self, info: IdpInfo) -> None:
        try:
            with self._session() as session, session.begin():
                row = session.get(IdpMetadata, self.source) or IdpMetadata(source=self.source)
                if row.xml != info.xml or row.last_error:
                    row.xml = info.xml
                    row.last_error = None
                    row.fetched_at = self.fetched_at
                row.last_attempt_at = self.fetched_at
                session.add(row)
        except sa.exc.SQLAlchemyError as exc:
            # Not migrated yet, or the database is down: the copy in memory serves.
            log.warning("cannot save the IdP metadata in the database: %s", exc.__class__.__name__)

    def _record_failure(self, error: str) -> None:
        try:
            with self._session() as session, session.begin():
                row = session.get(IdpMetadata, self.source) or IdpMetadata(source=self.source)
                row.last_attempt_at = utcnow()
                row.last_error = error[:2000]
                session.add(row)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot record the metadata failure in the database: %s", exc.__class__.__name__)

    def _load_saved(self) -> None:
        try:
            with self._session() as session:
                row = session.get(IdpMetadata, self.source)
                xml, fetched_at = (row.xml, row.fetched_at) if row else (None, None)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot read the saved IdP metadata: %s", exc.__class__.__name__)
            return
        if not xml:
            return
        try:
            self.info = parse_idp_metadata(xml)
        except MetadataError as exc:  # pragma: no cover - only good copies are saved
            log.error("the saved IdP metadata is not usable: %s", exc)
            return
        self.origin, self.fetched_at = "database", fetched_at
        log.warning("using the IdP metadata saved at %s", fetched_at)


def expiry_warnings(info: IdpInfo | None, days: int = 30, now: dt.datetime | None = None) -> list[str]:
    """Warnings for signing certificates that expire within ``days``."""
    if info is None:
        return []
    now = now or utcnow()
    latest = max(c.not_after for c in info.certs)
    warnings = []
    for cert in info.certs:
        left = cert.not_after - now
        if left > dt.timedelta(days=days):
            continue
        state = "has expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
        if cert.not_after < latest:
            advice = "a newer certificate is already in the metadata; make it active in Entra before then"
        else:
            advice = "create a new SAML signing certificate in Entra and make it active before then"
        warnings.append(
            f"IdP signing certificate {cert.subject} (sha256 {cert.fingerprint}...) {state}"
            f" ({cert.not_after:%Y-%m-%d}); {advice}"
        )
    return warnings
