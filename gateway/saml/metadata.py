"""The IdP's federation metadata: fetched, checked, refreshed, and kept when a refresh fails.

The source is ``saml.idp_metadata`` (a file or an https URL) or, when that is
empty, the IdP profile's ``default_metadata`` (the development IdP). Nothing
happens at import or start-up: the first request that needs the metadata
loads it, so ``gateway CONFIG migrate`` works before the schema exists. No
request ever waits on a download (see :class:`MetadataStore`); downloads
follow the rules of :mod:`gateway.saml.fetch`.

Every successful fetch that parses as usable IdP metadata becomes the current
copy and is saved in the ``idp_metadata`` table; a failed or invalid refresh
keeps the current copy (or, after a restart, the saved one), logs the failure,
counts it (``gateway_idp_metadata_refresh_failures_total``) and records it for
``gateway CONFIG check``. All signing certificates are kept, so a response
signed with Entra's new (rollover) certificate verifies before anyone touches
the gateway.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import ipaddress
import logging
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509

from ..db.models import IdpMetadata, utcnow
from ..errors import ConfigError
from ..metrics import instruments
from .errors import SamlRejection
from .fetch import FetchError, FetchPolicy, fetch_url
from .xmlguard import safe_parse

log = logging.getLogger("gateway.saml.metadata")

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BOM = b"\xef\xbb\xbf"


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


def read_source(source: str, policy: FetchPolicy) -> bytes:
    """Read a metadata file, or download a URL under the rules of :mod:`gateway.saml.fetch`."""
    if "://" in source:
        try:
            return fetch_url(source, policy)
        except FetchError as exc:
            raise MetadataError(str(exc)) from None
    try:
        with open(source, "rb") as handle:
            data = handle.read(policy.max_bytes + 1)
    except OSError as exc:
        raise MetadataError(f"cannot read {source}: {exc}") from None
    if len(data) > policy.max_bytes:
        raise MetadataError(f"{source} is larger than {policy.max_bytes} bytes")
    return data


#: Seconds between two looks at the shared row (a copy another process fetched is adopted within this).
SYNC_SECONDS = 60
#: Seconds before a failed fetch is tried again (or saml.metadata_refresh when shorter).
RETRY_SECONDS = 30
#: Seconds between looks while this process has no metadata at all.
WAITING_SECONDS = 2
#: Up to this many seconds are added at random to each wait, so processes started together spread out.
JITTER_SECONDS = 5

_STORES: weakref.WeakSet[MetadataStore] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for store in list(_STORES):
        store.close()


class MetadataStore:
    """The current IdP metadata of one app instance (thread-safe).

    Requests only read :attr:`info`; they never wait on a download. A file or
    the IdP profile is read on first use (a local read). A URL is never
    fetched on a request: the first use takes the copy saved in the database,
    and a background thread of this process (started on first use, so
    ``migrate`` and a server's master process start none) fetches it.

    The processes of every instance share one schedule through the
    ``idp_metadata`` row: each looks at the row every :data:`SYNC_SECONDS`
    (plus jitter) and adopts a copy another process saved; when the row says
    a refresh is due, the first to claim it (a compare-and-set of
    ``last_attempt_at``) fetches, and the others adopt its result. Without a
    database each process keeps its own schedule.
    """

    def __init__(self, registry, source: str, refresh_seconds: int, default=None):
        self.registry = registry
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.default = default  # callable(registry) -> str | None, from the IdP profile
        self.policy = FetchPolicy.from_settings(registry.gateway_settings.saml)
        _check_literal_address(source, self.policy)
        self.info: IdpInfo | None = None
        self.origin = ""  # "source", "database" or "profile"
        self.fetched_at: dt.datetime | None = None
        self.last_error: str | None = None
        self._started = False  # the first use's local load is done
        self._lock = threading.Lock()  # the first load, and one fetch at a time
        self._start_lock = threading.Lock()  # never held across a fetch: requests may take it
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._own_due = 0.0  # monotonic; the schedule when the database cannot be read

    # ------------------------------------------------------------ public

    def current(self) -> IdpInfo | None:
        """The metadata in force; never waits on the network."""
        if not self._started or (self.info is None and not self.source):
            with self._lock:
                if not self._started or (self.info is None and not self.source):
                    self._first_load()
                    self._started = True
        if self.source and (self._thread is None or not self._thread.is_alive()) and not self._stopped:
            self._start()
        return self.info

    def refresh_now(self) -> IdpInfo | None:
        """Read the source now, whatever the schedule ("Refresh metadata now", ``gateway CONFIG check``).

        This one waits on the download, at most ``saml.metadata_timeout``:
        someone asked for it.
        """
        with self._lock:
            self._started = True
            if self.source:
                self._refresh_from_source()
            else:
                self._load_profile()
        return self.info

    def wake(self) -> None:
        """Let the background thread look at the shared schedule now rather than at its next round."""
        self._wake.set()

    def close(self) -> None:
        """Stop the background thread (a fetch under way ends by its deadline and is not stored)."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def status(self) -> tuple[str | None, list[str]]:
        """(readiness problem or None, warnings) for /readyz and ``check``."""
        info = self.current()
        warnings = []
        if info is None:
            reason = self.last_error or ("not fetched yet" if "://" in self.source else "not loaded")
            return (f"no usable IdP metadata: {reason}", warnings)
        if self.last_error:
            when = self.fetched_at.isoformat(timespec="seconds") if self.fetched_at else "an earlier run"
            warnings.append(f"refresh failed ({self.last_error}); using the copy from {when} ({self.origin})")
        return (None, warnings)

    # ------------------------------------------------------------ loading

    def _first_load(self) -> None:
        if not self.source:
            self._load_profile()
        elif "://" in self.source:
            self._load_saved()
        else:
            self._refresh_from_source()

    def _load_profile(self) -> None:
        try:
            xml = self.default(self.registry) if self.default else None
            if not xml:
                raise MetadataError("saml.idp_metadata is empty and the IdP profile provides none")
            info = parse_idp_metadata(xml)
        except MetadataError as exc:
            self._failed(exc)
            return
        self._install(info, "profile", utcnow(), error=None)

    def _refresh_from_source(self) -> bool:
        """Read the source; store a good copy, or keep the current one and record the failure."""
        try:
            info = parse_idp_metadata(read_source(self.source, self.policy))
        except MetadataError as exc:
            if self._stopped:
                return False
            self._failed(exc)
            self._record_failure(str(exc))
            if self.info is None:
                self._load_saved()
            return False
        if self._stopped:
            return False
        self._install(info, "source", utcnow(), error=None)
        instruments.METADATA_REFRESHED.set(self.fetched_at.timestamp())
        self._save(info)
        return True

    def _failed(self, exc: Exception) -> None:
        instruments.METADATA_FAILURES.inc()
        self.last_error = str(exc)
        log.error("IdP metadata refresh from %s failed: %s", self.source or "the IdP profile", exc)

    def _install(self, info: IdpInfo, origin: str, fetched_at, error: str | None) -> None:
        if self.info is None or info.xml != self.info.xml:
            log.info(
                "IdP metadata loaded from %s: entity %s, %d signing certificate(s)",
                self.source if origin != "profile" else "the IdP profile",
                info.entity_id,
                len(info.certs),
            )
        self.info, self.origin, self.fetched_at, self.last_error = info, origin, fetched_at, error

    # ------------------------------------------------------------ the background thread

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="idp-metadata-refresh", daemon=True)
            _STORES.add(self)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                delay = self._round()
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("IdP metadata refresh round failed")
                delay = RETRY_SECONDS
            if self.info is None:
                delay = min(delay, WAITING_SECONDS)
            self._wake.wait(delay + random.uniform(0, JITTER_SECONDS if self.info is not None else 0.5))
            self._wake.clear()

    def _round(self) -> float:
        """Adopt what another process saved, or fetch when the shared schedule says so; seconds to the next round."""
        try:
            row = self._read_row()
        except sa.exc.SQLAlchemyError as exc:
            log.debug("IdP metadata: the database cannot be read (%s); own schedule", exc.__class__.__name__)
            if time.monotonic() >= self._own_due:
                with self._lock:
                    ok = self._refresh_from_source()
                self._own_due = time.monotonic() + (self.refresh_seconds if ok else self._retry())
            return min(SYNC_SECONDS, max(1.0, self._own_due - time.monotonic()))
        if row is not None:
            self._adopt(row)
        attempt = row.last_attempt_at if row is not None else None
        interval = self._retry() if row is None or row.last_error or not row.xml else self.refresh_seconds
        now = utcnow()
        if attempt is None or now >= attempt + dt.timedelta(seconds=interval):
            if self._claim(row is not None, attempt, now):
                with self._lock:
                    ok = self._refresh_from_source()
                return min(SYNC_SECONDS, self.refresh_seconds if ok else self._retry())
            return WAITING_SECONDS  # another process is fetching: adopt its copy soon
        left = (attempt + dt.timedelta(seconds=interval) - now).total_seconds()
        return min(SYNC_SECONDS, max(1.0, left))

    def _retry(self) -> int:
        return min(RETRY_SECONDS, self.refresh_seconds)

    def _adopt(self, row: IdpMetadata) -> None:
        """Take the row's copy and error: what the last fetch by any process found."""
        with self._lock:
            if row.xml and (self.info is None or row.xml != self.info.xml):
                try:
                    info = parse_idp_metadata(row.xml)
                except MetadataError as exc:  # pragma: no cover - only good copies are saved
                    log.error("the saved IdP metadata is not usable: %s", exc)
                    return
                self._install(info, "database", row.fetched_at, error=row.last_error)
            else:
                self.last_error = row.last_error
                if (
                    self.info is not None
                    and row.fetched_at
                    and (self.fetched_at is None or row.fetched_at > self.fetched_at)
                ):
                    self.fetched_at = row.fetched_at  # another process confirmed the same copy
            if self.info is not None and self.fetched_at is not None:
                # Every process reports when the copy in force was last confirmed, by whichever process.
                instruments.METADATA_REFRESHED.set(self.fetched_at.timestamp())

    # ------------------------------------------------------------ the idp_metadata row

    def _session(self):
        return self.registry.dbsession_factory()

    def _read_row(self) -> IdpMetadata | None:
        with self._session() as session:
            row = session.get(IdpMetadata, self.source)
            if row is not None:
                session.expunge(row)
            return row

    def _claim(self, exists: bool, seen, now: dt.datetime) -> bool:
        """Whether this process won the right to fetch now (``last_attempt_at`` still what it saw)."""
        try:
            with self._session() as session, session.begin():
                if not exists:
                    session.add(IdpMetadata(source=self.source, last_attempt_at=now))
                    session.flush()
                    return True
                column = IdpMetadata.last_attempt_at
                result = session.execute(
                    sa.update(IdpMetadata)
                    .where(IdpMetadata.source == self.source, column.is_(None) if seen is None else column == seen)
                    .values(last_attempt_at=now)
                )
                return result.rowcount == 1
        except sa.exc.IntegrityError:
            return False  # another process inserted the row first
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot claim the IdP metadata refresh: %s", exc.__class__.__name__)
            return True  # fetch anyway; only the sharing is lost

    def _save(self, info: IdpInfo) -> None:
        try:
            with self._session() as session, session.begin():
                row = session.get(IdpMetadata, self.source) or IdpMetadata(source=self.source)
                if row.xml != info.xml:
                    row.xml = info.xml
                # fetched_at: the last successful refresh, by any process (the others adopt it).
                row.fetched_at = row.last_attempt_at = self.fetched_at
                row.last_error = None
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
            row = self._read_row()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot read the saved IdP metadata: %s", exc.__class__.__name__)
            return
        if row is None or not row.xml:
            return
        try:
            info = parse_idp_metadata(row.xml)
        except MetadataError as exc:  # pragma: no cover - only good copies are saved
            log.error("the saved IdP metadata is not usable: %s", exc)
            return
        self._install(info, "database", row.fetched_at, error=self.last_error or row.last_error)
        log.warning("using the IdP metadata saved at %s", row.fetched_at)


def _check_literal_address(source: str, policy: FetchPolicy) -> None:
    """A metadata URL naming a non-public address stops start-up (a host name is checked at each fetch)."""
    if "://" not in source:
        return
    host = urlsplit(source).hostname or ""
    address = "127.0.0.1" if host.lower() == "localhost" else host
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return
    if not policy.permits(address):
        raise ConfigError(
            f"saml.idp_metadata: {host} is not a public address; add it to saml.metadata_allow_networks"
            f' to fetch metadata from it, got "{source}"'
        )


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
