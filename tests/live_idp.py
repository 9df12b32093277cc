"""The test IdP on a real port, for browser tests of a gateway that is not on localhost.

``LiveIdp`` serves what a browser meets at Entra: ``/sso`` takes the
gateway's HTTP-Redirect AuthnRequest and shows a page with one button per
test person, each a form that POSTs a signed, Entra-shaped Response to the
gateway's ACS (no JavaScript, like the development IdP's page); ``/slo``
takes the gateway's LogoutRequest and sends the browser back with a
LogoutResponse. The responses are built and signed by :class:`TestIdp`, so
the gateway verifies real signatures against the metadata this writes.
"""

from __future__ import annotations

import base64
import html
import re
import threading
import urllib.parse
import zlib
from wsgiref.simple_server import WSGIRequestHandler, make_server

from conftest import free_port
from saml_support import TestIdp, b64


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _inflate(value: str) -> str:
    return zlib.decompress(base64.b64decode(value), -15).decode()


class LiveIdp:
    """``TestIdp`` answering a browser, for a gateway at ``base_url``."""

    def __init__(self, idp: TestIdp, base_url: str, people: dict[str, dict] | None = None):
        self.idp = idp
        self.base_url = base_url.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: userName -> claims; the page offers one button per person.
        self.people = people or {"alice@example.com": idp.claims("alice@example.com")}
        self._server = make_server("127.0.0.1", self.port, self._app, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LiveIdp":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_metadata(self, name: str = "live-idp-metadata.xml") -> str:
        path = self.idp.folder / name
        path.write_bytes(self.idp.metadata(sso_url=self.url + "/sso", slo_url=self.url + "/slo"))
        return str(path)

    # ------------------------------------------------------------ WSGI

    def _app(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        path = environ["PATH_INFO"]
        if path == "/sso" and "SAMLRequest" in query:
            body = self._pick_page(_inflate(query["SAMLRequest"][0]), query.get("RelayState", [None])[0])
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body.encode()]
        if path == "/slo" and "SAMLRequest" in query:
            request_id = re.search(r' ID="([^"]+)"', _inflate(query["SAMLRequest"][0])).group(1)
            xml = self.idp.logout_response_xml(request_id, destination=self.base_url + "/saml/slo")
            location = self.base_url + "/saml/slo?" + self.idp.redirect_query("SAMLResponse", xml)
            start_response("303 See Other", [("Location", location)])
            return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    def _pick_page(self, authn_request: str, relay_state: str | None) -> str:
        request_id = re.search(r' ID="([^"]+)"', authn_request).group(1)
        acs = self.base_url + "/saml/acs"
        forms = []
        for name, claims in self.people.items():
            xml = self.idp.response(
                request_id, name_id=name, attributes=claims,
                audience=self.base_url + "/saml/metadata", recipient=acs, destination=acs,
            )
            relay = (
                f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">' if relay_state else ""
            )
            forms.append(
                f'<form method="post" action="{html.escape(acs)}">'
                f'<input type="hidden" name="SAMLResponse" value="{b64(xml)}">{relay}'
                f'<button type="submit" data-user="{html.escape(name)}">Sign in as {html.escape(name)}</button></form>'
            )
        return "<!doctype html><title>Test IdP</title><h1>Test IdP: pick a person</h1>" + "".join(forms)
