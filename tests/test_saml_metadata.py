"""IdP metadata: BOM, several certificates, refresh, last good copy, URL source, expiry warnings, start-up errors;
the fetch of a URL (deadline, size cap, redirects, addresses) and its background refresh."""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from gateway import ConfigError
from gateway.db.models import IdpMetadata, utcnow
from gateway.saml.fetch import MAX_METADATA_BYTES, FetchPolicy, is_public
from gateway.saml.metadata import expiry_warnings, parse_idp_metadata
from gateway.testing import SESSION_SECRET
from gateway.testing.app import close_app
from saml_support import make_keypair, sign_in


def store(app):
    return app.app.registry.saml_sp.store


def refresh(app):
    store(app).refresh_now()


def test_bom_and_every_signing_certificate_are_read(idp):
    info = parse_idp_metadata(idp.metadata(certs=[idp.keys, idp.rollover], bom=True))
    assert info.entity_id == idp.entity_id and len(info.certs) == 2
    assert info.sso_redirect_url.endswith("/saml2")


def test_unknown_profile_stops_start_up(make_app):
    with pytest.raises(ConfigError, match='^saml.idp_profile: .*"okta"'):
        make_app(**{"saml.idp_profile": "okta"})


def test_entra_without_metadata_stops_start_up(make_app):
    with pytest.raises(ConfigError, match="^saml.idp_metadata: required"):
        make_app(**{"saml.idp_metadata": None})


def test_readiness_reports_the_metadata(saml_app):
    assert saml_app.get("/readyz").json == {"status": "ok"}


def test_refresh_picks_up_a_rolled_over_certificate(make_app, idp, tmp_path):
    path = tmp_path / "md.xml"
    path.write_bytes(idp.metadata())
    app = make_app(**{"saml.idp_metadata": str(path)})
    sign_in(app, idp)
    path.write_bytes(idp.metadata(certs=[idp.rollover]))
    refresh(app)
    sign_in(app, idp, key=idp.rollover)
    assert app.get("/whoami").json["userName"] == "alice@example.com"


def test_failed_refresh_keeps_the_last_good_copy(make_app, idp, tmp_path, database_url):
    path = tmp_path / "md.xml"
    path.write_bytes(idp.metadata())
    app = make_app(**{"saml.idp_metadata": str(path), "sqlalchemy.url": database_url})
    sign_in(app, idp)
    path.write_text("<html>maintenance</html>")
    refresh(app)
    sign_in(app, idp)  # still trusts the old copy
    warnings = app.app.registry.warning_checks["idp_metadata"](None)
    assert any("refresh failed" in w and "EntityDescriptor" in w for w in warnings)
    assert app.get("/readyz").status_int == 200

    # A restart while the source is still broken uses the copy saved in the database.
    restarted = make_app(**{"saml.idp_metadata": str(path), "sqlalchemy.url": database_url})
    sign_in(restarted, idp)
    assert store(restarted).origin == "database"


def test_no_metadata_at_all_is_not_ready(make_app, tmp_path, caplog):
    path = tmp_path / "md.xml"
    path.write_text("not xml")
    app = make_app(**{"saml.idp_metadata": str(path)})
    # The public probe says only "not ready"; the reason (naming the source) goes to the log.
    assert app.get("/readyz", status=503).json == {"status": "unavailable"}
    assert "no usable IdP metadata" in caplog.text
    response = app.get("/saml/login", status=503)
    assert response.headers["X-Reason"] == "idp_metadata_unavailable"


def test_start_up_does_not_touch_the_database(make_app, idp_metadata_file, tmp_path, caplog):
    # Not migrated: the app still builds (``migrate`` and ``check`` must work),
    # answers its liveness probe, and says why it is not ready.
    app = make_app(**{"sqlalchemy.url": f"sqlite:///{tmp_path}/empty.sqlite"})
    assert app.get("/healthz").json == {"status": "ok"}
    assert app.get("/readyz", status=503).json == {"status": "unavailable"}
    assert "gateway CONFIG migrate" in caplog.text


def test_metadata_from_an_http_url(make_app, idp):
    # Plain http only on loopback, and loopback only when listed.
    with MetadataServer(idp.metadata(), tls=None) as server:
        app = make_app(**{"saml.idp_metadata": server.url(), "saml.metadata_allow_networks": "127.0.0.1"})
        wait_until_ready(app)
        sign_in(app, idp)


def test_expiry_warning_30_days_ahead(idp, tmp_path):
    soon = make_keypair(tmp_path, "soon", days=20, common_name="Soon IdP")
    info = parse_idp_metadata(idp.metadata(certs=[soon]))
    (warning,) = expiry_warnings(info)
    assert "CN=Soon IdP" in warning and "expires in" in warning and "create a new" in warning
    info = parse_idp_metadata(idp.metadata(certs=[soon, idp.rollover]))
    (warning,) = expiry_warnings(info)
    assert "newer certificate is already in the metadata" in warning
    assert expiry_warnings(parse_idp_metadata(idp.metadata())) == []


def test_check_command_warns_about_expiry(make_app, idp, tmp_path):
    soon = make_keypair(tmp_path, "soon2", days=10)
    path = tmp_path / "md.xml"
    path.write_bytes(idp.metadata(certs=[soon]))
    app = make_app(**{"saml.idp_metadata": str(path)})
    warnings = app.app.registry.warning_checks["idp_metadata"](None)
    assert len(warnings) == 1 and "expires in" in warnings[0]


# ---------------------------------------------------------------- fetching a URL
#
# Real HTTP(S) servers on loopback with throwaway certificates; the gateway
# trusts their CA through saml.metadata_ca_file and reaches them because
# saml.metadata_allow_networks lists 127.0.0.1.


@dataclass(frozen=True)
class MetadataTls:
    ca_file: str
    cert_file: str
    key_file: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> MetadataTls:
    """A CA and a server certificate for 127.0.0.1, 127.0.0.2 and localhost, signed by it."""
    folder = tmp_path_factory.mktemp("metadata-tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Metadata test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metadata server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.2")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = MetadataTls(str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key"))
    Path(paths.ca_file).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(paths.cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(paths.key_file).write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class MetadataServer:
    """An HTTP(S) server on loopback that answers as ``mode`` says, and counts the requests it gets.

    Modes: ``serve`` (the body), ``redirect`` (to ``location``), ``hang``
    (nothing until :attr:`release` is set), ``drip`` (headers, then the body a
    byte every 0.1 s), ``garbage`` (HTML), ``huge`` (a body over the cap,
    without Content-Length).
    """

    def __init__(self, body: bytes, tls: MetadataTls | None, host: str = "127.0.0.1"):
        self.body, self.mode, self.location = body, "serve", ""
        self.hits = 0
        self.hanging = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits += 1
                mode = server.mode
                if mode == "hang":
                    server.hanging.set()
                    server.release.wait(30)
                    mode = "serve"
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif mode == "huge":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    chunk = b" " * 65536
                    for _ in range(MAX_METADATA_BYTES // len(chunk) + 2):
                        self.wfile.write(chunk)
                elif mode == "drip":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    for byte in server.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                else:
                    body = b"<html>maintenance</html>" if mode == "garbage" else server.body
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/federationmetadata/2007-06/federationmetadata.xml?appid=x") -> str:
        return f"{self.scheme}://{self.host}:{self.server.server_port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def url_settings(server: MetadataServer, tls: MetadataTls, **more) -> dict:
    return {
        "saml.idp_metadata": server.url(),
        "saml.metadata_allow_networks": "127.0.0.1",
        "saml.metadata_ca_file": tls.ca_file,
        **more,
    }


def wait_for(condition, what: str, bound: float = 30.0):
    """Poll until ``condition()`` is true (the bound only turns a hang into a failure)."""
    end = time.monotonic() + bound
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.02)


def wait_until_ready(app) -> None:
    wait_for(lambda: app.get("/readyz", expect_errors=True).status_int == 200, "/readyz to answer 200")


def failures(app) -> float:
    """gateway_idp_metadata_refresh_failures_total in a scrape of /metrics (added up over this test process's apps)."""
    text = app.get("/metrics", extra_environ={"REMOTE_ADDR": "127.0.0.1"}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_idp_metadata_refresh_failures_total"
    )


def backdate(app, seconds: int = 86400) -> None:
    """Make the shared schedule say a refresh is due (as it will once saml.metadata_refresh has passed)."""
    with app.app.registry.dbsession_factory() as session, session.begin():
        session.execute(sa.update(IdpMetadata).values(last_attempt_at=utcnow() - dt.timedelta(seconds=seconds)))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.251",
        "0.0.0.0",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "64:ff9b::a00:1",
        "::a00:1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public(address)
    assert not FetchPolicy(10).permits(address)


def test_listed_networks_are_allowed_in_every_form():
    policy = FetchPolicy(10, (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00::/64")))
    assert policy.permits("10.20.3.4") and policy.permits("::ffff:10.20.3.4") and policy.permits("fd00::5")
    assert not policy.permits("10.21.0.1") and not policy.permits("127.0.0.1") and not policy.permits("fd00:1::5")


@pytest.mark.parametrize("address", ["20.190.128.1", "2603:1026::1", "::ffff:20.190.128.1", "64:ff9b::14be:8001"])
def test_public_addresses_are_allowed(address):
    assert is_public(address)


def test_a_metadata_url_on_a_private_address_stops_start_up(make_app):
    for url in ("https://10.0.0.5/md.xml", "https://169.254.169.254/latest", "http://localhost:8080/md.xml"):
        with pytest.raises(
            ConfigError, match="^saml.idp_metadata: .* is not a public address; add it to saml.metadata_allow_networks"
        ):
            make_app(**{"saml.idp_metadata": url})


def test_https_metadata_arrives_in_the_background_and_sign_in_waits_for_nobody(make_app, idp, tls, database_url):
    with MetadataServer(idp.metadata(), tls) as server:
        server.mode = "hang"
        app = make_app(**url_settings(server, tls), **{"sqlalchemy.url": database_url})
        # No copy yet, and the server does not answer: a sign-in is refused at
        # once with a reason, and the public probe says only "not ready".
        response = app.get("/saml/login", status=503)
        assert response.headers["X-Reason"] == "idp_metadata_unavailable"
        assert app.get("/readyz", status=503).json == {"status": "unavailable"}
        wait_for(server.hanging.is_set, "the background fetch to reach the server")
        assert app.get("/saml/login", status=503).headers["X-Reason"] == "idp_metadata_unavailable"
        server.release.set()
        wait_until_ready(app)
        assert app.get("/readyz").json == {"status": "ok"}
        sign_in(app, idp)
        assert store(app).origin == "source" and store(app).last_error is None
        with app.app.registry.dbsession_factory() as session:
            assert session.get(IdpMetadata, server.url()).xml == store(app).info.xml
        # Closing the app (as pserve's master and the test kit do) stops its refresh thread.
        running = refresh_threads()
        close_app(app)
        assert refresh_threads() == running - 1


def refresh_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "idp-metadata-refresh")


def test_sign_in_does_not_wait_on_a_hanging_refresh(make_app, idp, tls, database_url):
    with MetadataServer(idp.metadata(), tls) as server:
        settings = url_settings(server, tls, **{"sqlalchemy.url": database_url, "saml.metadata_timeout": "60"})
        app = make_app(**settings)
        wait_until_ready(app)
        server.mode = "hang"
        backdate(app)
        store(app).wake()
        wait_for(server.hanging.is_set, "the refresh to reach the hanging server")
        # The refresh is stuck on the server (it has 60 s); sign-ins go on with the copy in force.
        sign_in(app, idp)
        assert app.get("/whoami").json["userName"] == "alice@example.com"
        assert app.get("/readyz").json == {"status": "ok"}
        assert not server.release.is_set() and store(app).last_error is None


def test_a_failed_background_refresh_keeps_the_last_good_copy_and_is_counted(make_app, idp, tls, database_url, caplog):
    with MetadataServer(idp.metadata(), tls) as server:
        app = make_app(**url_settings(server, tls), **{"sqlalchemy.url": database_url})
        wait_until_ready(app)
        before = failures(app)
        server.mode = "garbage"
        backdate(app)
        store(app).wake()
        wait_for(lambda: store(app).last_error is not None, "the refresh to fail")
        assert "EntityDescriptor" in store(app).last_error
        assert failures(app) == before + 1
        sign_in(app, idp)  # still trusts the last good copy
        assert app.get("/readyz").json == {"status": "ok"}
        warnings = app.app.registry.warning_checks["idp_metadata"](None)
        assert any("refresh failed" in w for w in warnings)
        with app.app.registry.dbsession_factory() as session:
            row = session.get(IdpMetadata, server.url())
            assert row.xml == store(app).info.xml and "EntityDescriptor" in row.last_error


def test_processes_share_one_fetch_through_the_database(make_app, idp, tls, database_url):
    with MetadataServer(idp.metadata(), tls) as server:
        settings = url_settings(server, tls, **{"sqlalchemy.url": database_url})
        first = make_app(**settings)
        wait_until_ready(first)
        assert server.hits == 1
        # Another worker or instance starts: it takes the saved copy and, the
        # refresh not being due, fetches nothing.
        second = make_app(**settings)
        assert second.get("/readyz").json == {"status": "ok"}
        assert store(second).origin == "database"
        sign_in(second, idp)
        # A refresh made by the first ("Refresh metadata now") reaches the second through the row.
        server.body = idp.metadata(certs=[idp.keys, idp.rollover])
        store(first).refresh_now()
        store(second).wake()
        wait_for(lambda: len(store(second).info.certs) == 2, "the second app to adopt the new copy")
        assert server.hits == 2
        sign_in(second, idp, key=idp.rollover)


def test_a_redirect_from_https_to_http_is_refused(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as redirector, MetadataServer(idp.metadata(), None) as target:
        redirector.mode, redirector.location = "redirect", target.url()
        app = make_app(**url_settings(redirector, tls))
        store(app).refresh_now()
        assert store(app).info is None
        assert "refused: metadata is fetched over https only" in store(app).last_error
        assert target.hits == 0


def test_a_redirect_from_https_to_https_is_followed(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as redirector, MetadataServer(idp.metadata(), tls) as target:
        redirector.mode, redirector.location = "redirect", target.url()
        app = make_app(**url_settings(redirector, tls))
        assert store(app).refresh_now() is not None and target.hits == 1


def test_a_redirect_to_a_private_address_is_refused_unless_allowed(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as redirector, MetadataServer(idp.metadata(), tls, "127.0.0.2") as inside:
        redirector.mode, redirector.location = "redirect", inside.url()
        app = make_app(**url_settings(redirector, tls))
        store(app).refresh_now()
        assert store(app).info is None
        assert "127.0.0.2, which is not a public address" in store(app).last_error
        assert inside.hits == 0
        # Listed, the same redirect is followed: the refusal above came from the address rule.
        allowed = make_app(**url_settings(redirector, tls, **{"saml.metadata_allow_networks": "127.0.0.1 127.0.0.2"}))
        assert store(allowed).refresh_now() is not None and inside.hits == 1


def test_a_slow_drip_is_stopped_by_the_total_deadline(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as server:
        # A byte every 0.1 s: each read is quick, the whole would take minutes.
        server.mode = "drip"
        app = make_app(**url_settings(server, tls, **{"saml.metadata_timeout": "1"}))
        store(app).refresh_now()
        assert store(app).info is None
        assert "within 1 s (saml.metadata_timeout)" in store(app).last_error


def test_an_oversized_body_is_refused(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as server:
        server.mode = "huge"
        app = make_app(**url_settings(server, tls))
        store(app).refresh_now()
        assert store(app).info is None
        assert f"is larger than {MAX_METADATA_BYTES} bytes" in store(app).last_error


def test_an_unknown_certificate_authority_is_refused(make_app, idp, tls):
    with MetadataServer(idp.metadata(), tls) as server:
        settings = url_settings(server, tls)
        del settings["saml.metadata_ca_file"]
        app = make_app(**settings)
        store(app).refresh_now()
        assert store(app).info is None and "CERTIFICATE_VERIFY_FAILED" in store(app).last_error


@pytest.mark.parametrize("server", ["granian", "waitress"])
def test_served_workers_fetch_once_and_stop_cleanly(server, idp, tls, tmp_path):
    """Under pserve: Granian's spawned workers (two) or waitress's threads get the metadata from one download."""
    import subprocess

    from conftest import BIN, free_port, server_environment, stop, wait_for_http

    port = free_port()
    servers = {
        "granian": f"use = egg:entra-identity-gateway#granian\nlisten = 127.0.0.1:{port}\nworkers = 2\n",
        "waitress": f"use = egg:waitress#main\nlisten = 127.0.0.1:{port}\n",
    }
    with MetadataServer(idp.metadata(), tls) as metadata:
        ini = tmp_path / "gateway.ini"
        ini.write_text(
            "[app:main]\nuse = egg:entra-identity-gateway\n"
            "gateway.base_url = http://127.0.0.1\ngateway.plugins = entra\n"
            f"saml.idp_metadata = {metadata.url()}\nsaml.metadata_allow_networks = 127.0.0.1\n"
            f"saml.metadata_ca_file = {tls.ca_file}\n"
            f"sqlalchemy.url = sqlite:///{tmp_path / 'gateway.sqlite'}\n"
            f"session.secret = {SESSION_SECRET}\nsession.cookie_secure = false\n\n"
            "[server:main]\n" + servers[server]
        )
        subprocess.run([str(BIN / "gateway"), str(ini), "migrate"], check=True, capture_output=True, timeout=120)
        log_path = tmp_path / "pserve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(BIN / "pserve"), str(ini)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=server_environment(),
            )
        try:
            # A generous bound: two spawned workers load the app on a busy machine.
            wait_for_http(f"http://127.0.0.1:{port}/healthz", process, log_path, timeout=120)
        except BaseException:
            stop(process)
            raise
        streak = 0

        def ready_on_fresh_connections() -> bool:
            # A new connection each time: the kernel spreads them over the workers.
            nonlocal streak
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", "/readyz")
                streak = streak + 1 if connection.getresponse().status == 200 else 0
            finally:
                connection.close()
            return streak >= 20

        try:
            wait_for(ready_on_fresh_connections, "every worker to be ready", bound=120)
            assert metadata.hits == 1
        finally:
            stop(process)
        log = log_path.read_text()
        assert process.returncode != -9 and "Traceback" not in log, log


def test_check_reads_a_metadata_url_now(idp, tls, tmp_path):
    """``gateway CONFIG check`` is a command, not a request: it downloads the metadata and says how that went."""
    import subprocess
    import sys

    gateway = str(Path(sys.executable).parent / "gateway")
    with MetadataServer(idp.metadata(), tls) as server:
        ini = tmp_path / "gateway.ini"
        ini.write_text(
            "[app:main]\nuse = egg:entra-identity-gateway\n"
            "gateway.base_url = http://127.0.0.1:6543\ngateway.plugins = entra\n"
            f"saml.idp_metadata = {server.url()}\nsaml.metadata_allow_networks = 127.0.0.1\n"
            f"saml.metadata_ca_file = {tls.ca_file}\n"
            f"sqlalchemy.url = sqlite:///{tmp_path / 'gateway.sqlite'}\n"
            f"session.secret = {SESSION_SECRET}\nsession.cookie_secure = false\n"
        )
        subprocess.run([gateway, str(ini), "migrate"], check=True, capture_output=True, timeout=60)
        first = subprocess.run([gateway, str(ini), "check"], capture_output=True, text=True, timeout=60)
        assert "ok   idp_metadata" in first.stdout, first.stdout + first.stderr
        assert server.hits == 1
        # Now the URL redirects to plain http: the saved copy still serves, and check says why the refresh failed.
        server.mode, server.location = "redirect", "http://127.0.0.1:1/md.xml"
        second = subprocess.run([gateway, str(ini), "check"], capture_output=True, text=True, timeout=60)
        assert "ok   idp_metadata" in second.stdout
        assert "WARN idp_metadata: refresh failed (redirect from" in second.stdout
        assert "refused: metadata is fetched over https only" in second.stdout


def test_without_a_readable_database_each_process_fetches_on_its_own(make_app, idp, tls, tmp_path):
    # Not migrated: the shared row cannot be read, so the process keeps its own schedule (and still gets the metadata).
    with MetadataServer(idp.metadata(), tls) as server:
        app = make_app(**url_settings(server, tls, **{"sqlalchemy.url": f"sqlite:///{tmp_path}/empty.sqlite"}))
        assert store(app).current() is None
        wait_for(lambda: store(app).info is not None, "the metadata without a database")
        assert server.hits == 1 and store(app).origin == "source"
