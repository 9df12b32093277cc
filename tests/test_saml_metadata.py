"""IdP metadata: BOM, several certificates, refresh, last good copy, URL source, expiry warnings, start-up errors."""

from __future__ import annotations

import http.server
import threading

import pytest
from saml_support import make_keypair, sign_in

from gateway import ConfigError
from gateway.saml.metadata import expiry_warnings, parse_idp_metadata


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
    body = idp.metadata()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/federationmetadata.xml?appid=x"
        app = make_app(**{"saml.idp_metadata": url})
        sign_in(app, idp)
    finally:
        server.shutdown()
        server.server_close()


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
