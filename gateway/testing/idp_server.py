"""The test IdP on a real port: what a browser meets at Entra, for tests of a served gateway.

A browser test (Playwright, or any HTTP client that follows the flow) needs
an IdP page to be sent to. :class:`IdpServer` answers the gateway's
HTTP-Redirect AuthnRequest at ``/saml2`` with a page holding one form per
test person: each POSTs a signed, Entra-shaped Response (made by
:class:`gateway.testing.saml.TestIdp` for that very request) to the
gateway's ACS, with the RelayState, when the person's button is clicked; no
JavaScript, like the development IdP's page. ``/slo`` answers the gateway's
LogoutRequest with a LogoutResponse, sending the browser back. The gateway
verifies real signatures against the metadata :meth:`IdpServer.write_metadata`
writes.

It serves in threads of its own, so a browser's parallel connections never
wait on each other.
"""

from __future__ import annotations

import base64
import html
import re
import socketserver
import threading
import urllib.parse
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .saml import TestIdp, b64, stable_oid


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _inflate(value: str) -> str:
    return zlib.decompress(base64.b64decode(value), -15).decode()


def _request_id(xml: str) -> str | None:
    match = re.search(r' ID="([^"]+)"', xml)
    return match.group(1) if match else None


class IdpServer:
    """``TestIdp`` answering a browser on ``http://<host>:<port>``, for a gateway at ``gateway_url``.

    ``people`` maps each test person's userName (the NameID) to their claims
    (``{claim URI: [values]}``, as :meth:`TestIdp.claims` makes them), or to
    None for the test IdP's usual claims with an object id derived from the
    name; the page offers one button per person (``data-user`` holds the
    name; the first also has the id ``continue``, for tests of one person).
    Change ``people`` and ``knobs`` (keyword arguments of
    :meth:`TestIdp.response`: another ``key``, a wrong ``audience`` ...)
    between sign-ins to send something else. ``requests`` keeps every
    AuthnRequest received, as XML. ``host`` is the name in :attr:`url` (the
    server listens on 127.0.0.1; map another name there in the browser).
    ``gateway_url`` may be set after construction, once the gateway's port
    is known. Use it as a context manager, or call :meth:`close`.
    """

    heading = "Test IdP: pick a person"

    def __init__(
        self, idp: TestIdp, gateway_url: str = "", people: Mapping[str, Any] | None = None, *, host: str = "127.0.0.1"
    ):
        self.idp = idp
        self.gateway_url = gateway_url
        self.people: dict[str, Any] = dict(people) if people is not None else {"alice@example.com": None}
        self.knobs: dict[str, Any] = {}
        self.requests: list[str] = []
        self._server = make_server("127.0.0.1", 0, self.app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.sso_url = self.url + "/saml2"
        self.slo_url = self.url + "/slo"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> IdpServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_metadata(self, path: str | Path | None = None) -> str:
        """Metadata naming this server's URLs, written to ``path`` (default: in the IdP's folder); its path."""
        target = Path(path) if path is not None else self.idp.folder / f"idp-server-{self.port}.xml"
        target.write_bytes(self.idp.metadata(sso_url=self.sso_url, slo_url=self.slo_url))
        return str(target)

    @property
    def _gateway(self) -> str:
        return self.gateway_url.rstrip("/")

    def claims_of(self, name: str) -> dict:
        claims = self.people.get(name)
        return claims if claims is not None else self.idp.claims(name, oid=stable_oid(name))

    # ------------------------------------------------------------ WSGI

    def app(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] == "GET" and "SAMLRequest" in query:
            xml = _inflate(query["SAMLRequest"][0])
            relay_state = query.get("RelayState", [None])[0]
            if path == "/saml2":
                self.requests.append(xml)
                page = self.page(_request_id(xml), relay_state).encode()
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "text/html; charset=utf-8"),
                        ("Content-Length", str(len(page))),
                        ("Cache-Control", "no-store"),
                    ],
                )
                return [page]
            if path == "/slo":
                answer = self.idp.logout_response_xml(_request_id(xml), destination=self._gateway + "/saml/slo")
                query = self.idp.redirect_query("SAMLResponse", answer, relay_state=relay_state)
                start_response("303 See Other", [("Location", self._gateway + "/saml/slo?" + query)])
                return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    def page(self, request_id: str | None, relay_state: str | None) -> str:
        """The sign-in page: one form per person, each carrying a response signed for this request."""
        acs = self._gateway + "/saml/acs"
        values = {"audience": self._gateway + "/saml/metadata", "recipient": acs, "destination": acs, **self.knobs}
        relay = (
            f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">'
            if relay_state is not None
            else ""
        )
        forms = []
        for number, name in enumerate(list(self.people)):
            xml = self.idp.response(request_id, name_id=name, attributes=self.claims_of(name), **values)
            forms.append(
                f'<form method="post" action="{html.escape(acs)}">'
                f'<input type="hidden" name="SAMLResponse" value="{b64(xml)}">{relay}'
                f"{self.button(name, first=number == 0)}</form>"
            )
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Test IdP</title></head>"
            f"<body><h1>{html.escape(self.heading)}</h1>{''.join(forms)}</body></html>"
        )

    def button(self, name: str, first: bool) -> str:
        """The submit button that signs ``name`` in."""
        ident = ' id="continue"' if first else ""
        return f'<button type="submit"{ident} data-user="{html.escape(name)}">Continue as {html.escape(name)}</button>'
