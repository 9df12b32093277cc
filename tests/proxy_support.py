"""Real reverse proxies in front of a real gateway, for the forward-auth tests.

The proxy configurations the docs show are files (``docs/proxies/``); the
tests run those very files, changing only host names, ports and certificate
paths (:func:`render` refuses a substitution whose text the file no longer
contains, so the docs and the tests cannot drift apart). Everything runs as
real processes on free loopback ports under a temporary folder:

- the gateway: ``pserve`` of an ini (Granian or waitress), with its own
  SQLite database, people and groups provisioned over its SCIM API;
- :class:`Echo`: the protected app, which answers with what it received
  (header values decoded from their bytes as UTF-8, and the raw request
  target), and remembers every request, so a test can tell that a refused
  request never reached it;
- nginx or Caddy with the docs' configuration, over TLS with a certificate
  for ``*.example.test`` (Caddy issues its own from its local CA);
- for the browser tests, a sign-in page like the development IdP's,
  signing with the test IdP, on ``idp.example.test`` (:class:`IdpServer`).

Requests are sent with :func:`raw_request` (a socket, byte for byte: no
client library normalises the path or the headers) or from Chromium with
``--host-resolver-rules`` mapping ``*.example.test`` to 127.0.0.1, so host
names, cookie domains and ports behave as they do in production.
"""

from __future__ import annotations

import datetime as dt
import html
import ipaddress
import json
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from conftest import BIN, SESSION_SECRET, free_port, server_environment, stop, wait_for_http
from gateway.testing.idp_server import IdpServer as KitIdpServer
from gateway.testing.ini import logging_sections
from gateway.testing.saml import stable_oid
from saml_support import authn_request_id, b64

ROOT = Path(__file__).parent.parent
PROXY_DOCS = ROOT / "docs" / "proxies"

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
CADDY = shutil.which("caddy")
CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = os.path.exists(CHROMIUM) or shutil.which("chromium") is not None


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


#: Containers often run without IPv6: the tests of a gateway on [::] are then skipped.
HAVE_IPV6 = _have_ipv6_loopback()

#: A group name of 250 characters (Entra allows 256), numbered; no commas, so a groups header splits back.
_WORDS = "Regional Finance and Operations Planning Committee for Europe Middle East and Africa "
LONG_GROUP = (_WORDS * 3)[:243] + " WG {:03d}"

#: Why a proxy's tests are skipped when it is missing.
MISSING = {
    "nginx": "nginx is not installed and ./dev test could not install it (apt-get install nginx-light)",
    "caddy": "caddy is not installed and ./dev test could not install it (apt-get install caddy)",
}
PROXIES = {"nginx": NGINX, "caddy": CADDY}

DOMAIN = "example.test"
APP_HOST = f"app.{DOMAIN}"
AUTH_HOST = f"auth.{DOMAIN}"
IDP_HOST = f"idp.{DOMAIN}"

#: The names the docs' files use, and what the tests put in their place.
DOC_APP_HOST = "app.example.com"
DOC_AUTH_HOST = "auth.example.com"
DOC_GATEWAY = "127.0.0.1:6543"
DOC_APP = "127.0.0.1:8080"

SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1",
    # The proxies' certificates come from the test's own CA.
    "--ignore-certificate-errors",
]


def proxy_param(kind: str, *values, id: str | None = None, marks=()):
    """A ``pytest.param`` of ``(kind, *values)``, skipped with the reason when that proxy is not installed."""
    return pytest.param(
        (kind, *values), id=id or kind, marks=[*marks, pytest.mark.skipif(PROXIES[kind] is None, reason=MISSING[kind])]
    )


# ---------------------------------------------------------------- the docs' files


def render(name: str, substitutions: dict[str, str]) -> str:
    """``docs/proxies/<name>`` with each key replaced by its value, all in one pass.

    Each key must occur in the file: a docs change that drops or renames one
    fails here, naming it, instead of leaving the test running something else.
    """
    text = (PROXY_DOCS / name).read_text()
    for old in substitutions:
        assert old in text, f"docs/proxies/{name} no longer contains {old!r}: update the test's substitutions"
    pattern = re.compile("|".join(re.escape(k) for k in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda m: substitutions[m.group(0)], text)


# ---------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """A self-signed certificate for ``*.example.test`` (and loopback), for nginx."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{DOMAIN}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(f"*.{DOMAIN}"),
                    x509.DNSName(DOMAIN),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    tls = Tls(folder / "example.test.pem", folder / "example.test.key")
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


_CONTEXT: ssl.SSLContext | None = None


def _client_context() -> ssl.SSLContext:
    """One context for every test request (the certificates are the test's own: not verified).

    Made once: loading a default context's CA store costs ~40 ms a request.
    """
    global _CONTEXT
    if _CONTEXT is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _CONTEXT = context
    return _CONTEXT


# ---------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    """A response as it came off the wire: header names and values are bytes."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    head: bytes  # the status line and header block, verbatim

    def header(self, name: str) -> bytes | None:
        """The raw bytes of the first header ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def all(self, name: str) -> list[bytes]:
        wanted = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == wanted]

    def cookies(self) -> dict[str, str]:
        """name -> value of every Set-Cookie (attributes dropped)."""
        jar = {}
        for value in self.all("Set-Cookie"):
            pair = value.decode("latin-1").split(";", 1)[0]
            name, _, val = pair.partition("=")
            jar[name.strip()] = val.strip()
        return jar

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_request(
    port: int,
    target: str,
    *,
    host: str,
    method: str = "GET",
    headers: list[tuple[str, str]] | tuple = (),
    body: bytes = b"",
    tls: bool = True,
    address: str = "127.0.0.1",
    sni: str | None = None,
    timeout: float = 20.0,
) -> Answer:
    """Send one request exactly as written (``target`` and headers untouched) and read the answer.

    ``host`` is the Host header, sent as given (a trailing dot, a port, any
    case). ``Connection: close`` is added; the answer is read to the end.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as plain:
        plain.settimeout(timeout)
        # Without it, the TLS 1.3 client's small writes wait for delayed ACKs: ~45 ms a request.
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        plain.connect((address, port))
        if tls:
            server_name = sni or (None if host.startswith("[") else host.rsplit(":", 1)[0].rstrip(".") or None)
            connection = _client_context().wrap_socket(plain, server_hostname=server_name)
        else:
            connection = plain
        try:
            connection.sendall(data)
            received = bytearray()
            while True:
                try:
                    chunk = connection.recv(65536)
                except ssl.SSLError:
                    break  # a TLS peer that closes without close_notify
                if not chunk:
                    break
                received += chunk
        finally:
            if connection is not plain:
                connection.close()
    return _parse(bytes(received), method)


def _parse(data: bytes, method: str) -> Answer:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete answer: {data[:500]!r}")
    status_line, *header_lines = head.split(b"\r\n")
    _, status, *reason = status_line.split(b" ", 2)
    headers = []
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip(b" \t")))
    answer = Answer(int(status), (reason[0] if reason else b"").decode("latin-1"), headers, b"", head)
    if method == "HEAD":
        return answer
    if (answer.header("Transfer-Encoding") or b"").lower() == b"chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        answer.body = bytes(body)
    else:
        length = answer.header("Content-Length")
        answer.body = rest[: int(length)] if length is not None else rest
    return answer


def form_body(fields: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(fields).encode()


# ---------------------------------------------------------------- small servers in threads


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    def get_environ(self):
        environ = super().get_environ()
        environ["RAW_URI"] = self.path  # the request target as sent, before any decoding
        return environ

    def log_message(self, *args):
        pass


class _Threaded:
    def __init__(self, app, address: str = "127.0.0.1", port: int | None = None):
        self.port = port or free_port()
        self.server = make_server(address, self.port, app, server_class=_ThreadingServer, handler_class=_Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Echo(_Threaded):
    """The protected app: answers with what reached it, and keeps a list of every request.

    A WSGI server hands header values over as latin-1 strings (PEP 3333);
    their bytes are what came on the wire, decoded here as UTF-8, as an app
    should. HTML for a browser, JSON otherwise.
    """

    def __init__(self):
        self.seen: list[dict] = []
        super().__init__(self.app)

    def app(self, environ, start_response):
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = "-".join(part.capitalize() for part in key[5:].split("_"))
                raw = value.encode("latin-1")
                headers[name] = raw.decode("utf-8", "backslashreplace")
        record = {
            "method": environ["REQUEST_METHOD"],
            "uri": environ.get("RAW_URI", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "headers": headers,
        }
        self.seen.append(record)
        if "text/html" in environ.get("HTTP_ACCEPT", ""):
            rows = "".join(
                f"<tr><th>{html.escape(k)}</th><td id='{html.escape(k.lower())}'>{html.escape(v)}</td></tr>"
                for k, v in sorted(headers.items())
                if k.startswith("X-Auth-Request-")
            )
            body = (
                "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>The app</title></head>"
                "<body style='font-family:sans-serif'><h1>The protected app</h1>"
                f"<p>You asked for <code id='uri'>{html.escape(record['uri'])}</code> on "
                f"<code id='host'>{html.escape(headers.get('Host', ''))}</code>.</p>"
                f"<table>{rows}</table></body></html>"
            ).encode()
            content_type = "text/html; charset=utf-8"
        else:
            body = json.dumps(record, ensure_ascii=False).encode()
            content_type = "application/json; charset=utf-8"
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def reached(self, since: int) -> list[dict]:
        return self.seen[since:]


class IdpServer(KitIdpServer):
    """The kit's IdP server (gateway.testing.idp_server) playing Entra's login URL on ``idp.example.test``.

    A page like the development IdP's (plugins/gateway_devidp): "Pick a test
    user", a button per person (``people``: email to the name shown), each
    posting a signed Entra-shaped response to the gateway's ACS (no groups
    claim, so SCIM's groups are the truth). The development IdP itself cannot
    serve these tests: it runs only inside a gateway whose
    ``gateway.base_url`` is localhost or 127.0.0.1, while the gateway here
    must be ``auth.example.test`` so that its cookie, for ``.example.test``,
    reaches the app.
    """

    heading = "Pick a test user"

    def __init__(self, idp, folder: Path, gateway_base_url: str, people: dict[str, str]):
        self.names = people
        claims = {email: idp.claims(email, oid=stable_oid(email), groups=()) for email in people}
        super().__init__(idp, gateway_base_url, claims, host=IDP_HOST)
        self.metadata = Path(self.write_metadata(folder / "idp-metadata.xml"))

    def button(self, name: str, first: bool) -> str:
        esc = html.escape
        return f'<button type="submit" data-email="{esc(name)}">{esc(self.names[name])} &lt;{esc(name)}&gt;</button>'


# ---------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    ini: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    base_url: str  # gateway.base_url: what browsers use, through the proxy
    direct: str  # http://127.0.0.1:PORT (or [::1]), for SCIM and the wire tests
    _token: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------ SCIM

    def token(self) -> str:
        if self._token is None:
            result = subprocess.run(
                [str(BIN / "gateway"), str(self.ini), "token", "create", f"tests-{uuid.uuid4().hex[:8]}"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=self.ini.parent,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            self._token = next(line.strip() for line in result.stdout.splitlines() if line.strip().startswith("gws_"))
        return self._token

    def scim(self, method: str, path: str, body=None, expect: int | None = None):
        import requests

        response = requests.request(
            method,
            f"{self.direct}/scim/v2{path}",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/scim+json"},
        )
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def create_user(self, user_name: str, display_name: str, *, email: str | None = None, external_id=None) -> dict:
        body = {"schemas": [SCIM_USER], "userName": user_name, "displayName": display_name, "active": True}
        if email is not None:
            body["emails"] = [{"value": email, "type": "work", "primary": True}]
        if external_id:
            body["externalId"] = external_id
        return self.scim("POST", "/Users", body, expect=201)

    def create_group(self, display_name: str, members=(), external_id: str | None = None) -> dict:
        body = {"schemas": [SCIM_GROUP], "displayName": display_name, "members": [{"value": m} for m in members]}
        if external_id:
            body["externalId"] = external_id
        return self.scim("POST", "/Groups", body, expect=201)

    def add_member(self, group_id: str, user_id: str) -> None:
        self.scim(
            "PATCH",
            f"/Groups/{group_id}",
            {"schemas": [PATCH_OP], "Operations": [{"op": "Add", "path": "members", "value": [{"value": user_id}]}]},
        )

    def set_active(self, user_id: str, active: bool) -> None:
        self.scim(
            "PATCH",
            f"/Users/{user_id}",
            {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": active}]},
            expect=200,
        )

    # ------------------------------------------------------------ sign-in with the test IdP

    def sign_in(self, idp, user_name: str, oid: str | None = None, *, via: Proxy | None = None, drop_claims=()) -> str:
        """SP-initiated sign-in with a signed Entra-shaped response; the session cookie's value."""
        acs = self.sign_in_answer(idp, user_name, oid, via=via, drop_claims=drop_claims)
        assert acs.status in (302, 303), (acs.status, acs.text[:2000])
        return acs.cookies()["gateway_session"]

    def sign_in_answer(
        self,
        idp,
        user_name: str,
        oid: str | None = None,
        *,
        via: Proxy | None = None,
        login: str = "/saml/login?next=/",
        drop_claims=(),
    ) -> Answer:
        """``login`` (an SP-initiated sign-in's start), then the ACS with the test IdP's answer.

        Through ``via`` (the proxy, as a browser reaches the gateway) or
        straight to the gateway's port. ``drop_claims``: claim URIs left out
        of the answer. Returns the ACS's answer.
        """

        def send(method, target, headers=(), body=b""):
            if via is not None:
                return raw_request(
                    via.port, target, host=f"{AUTH_HOST}:{via.port}", method=method, headers=headers, body=body
                )
            return raw_request(
                self.port,
                target,
                host=f"{AUTH_HOST}:{self.port}",
                method=method,
                headers=headers,
                body=body,
                tls=False,
                address=self.address,
            )

        started = send("GET", login)
        assert started.status in (302, 303), (started.status, started.text)
        request_id = authn_request_id(started.header("Location").decode())
        binding = "; ".join(f"{k}={v}" for k, v in started.cookies().items())
        attributes = idp.claims(user_name, oid=oid or str(uuid.uuid5(uuid.NAMESPACE_URL, user_name)), groups=())
        attributes = {k: v for k, v in attributes.items() if k not in drop_claims}
        xml = idp.response(
            request_id,
            name_id=user_name,
            attributes=attributes,
            audience=self.base_url + "/saml/metadata",
            recipient=self.base_url + "/saml/acs",
            destination=self.base_url + "/saml/acs",
        )
        return send(
            "POST",
            "/saml/acs",
            headers=[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", binding)],
            body=form_body({"SAMLResponse": b64(xml)}),
        )

    @property
    def address(self) -> str:
        return urllib.parse.urlsplit(self.direct).hostname


def write_gateway_ini(
    folder: Path,
    port: int,
    *,
    base_url: str,
    idp_metadata: str,
    settings: dict[str, str] | None = None,
    server: str = "granian",
    listen_host: str = "127.0.0.1",
) -> Path:
    app_settings = {
        "gateway.base_url": base_url,
        "gateway.plugins": "entra sqlstore",
        "sqlalchemy.url": f"sqlite:///{folder}/gateway.sqlite",
        "saml.idp_metadata": idp_metadata,
        "session.secret": SESSION_SECRET,
        "session.cookie_domain": f".{DOMAIN}",
        "provisioning.mode": "scim first_login",
        **(settings or {}),
    }
    lines = ["[app:main]", "use = egg:entra-identity-gateway"]
    for key, value in app_settings.items():
        value = str(value).replace("%", "%%")
        lines.append(
            f"{key} = {value}"
            if "\n" not in value
            else f"{key} =\n" + "\n".join(f"    {line}" for line in value.splitlines() if line.strip())
        )
    lines += ["", "[server:main]"]
    if server == "granian":
        lines += [
            "use = egg:entra-identity-gateway#granian",
            f"listen = {listen_host}:{port}",
            "workers = 1",
            "threads = 4",
        ]
    elif server == "waitress":
        lines += ["use = egg:waitress#main", f"listen = {listen_host}:{port}", "threads = 4"]
    else:
        raise ValueError(server)
    lines += [
        "",
        *logging_sections().splitlines(),
    ]
    ini = folder / "gateway.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def start_gateway(
    folder: Path,
    *,
    base_url: str,
    idp_metadata: str,
    settings: dict[str, str] | None = None,
    server: str = "granian",
    listen_host: str = "127.0.0.1",
    port: int | None = None,
) -> Gateway:
    """Migrate and ``pserve`` a gateway ini; returns once /healthz answers. Stop it with :func:`stop_gateway`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    ini = write_gateway_ini(
        folder,
        port,
        base_url=base_url,
        idp_metadata=idp_metadata,
        settings=settings,
        server=server,
        listen_host=listen_host,
    )
    migrate = subprocess.run([str(BIN / "gateway"), str(ini), "migrate"], capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    log_path = folder / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "pserve"), str(ini)], stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=server_environment()
        )
    direct = f"http://127.0.0.1:{port}" if listen_host in ("127.0.0.1", "0.0.0.0", "[::]") else f"http://[::1]:{port}"
    try:
        wait_for_http(direct + "/healthz", process, log_path)
    except BaseException:
        stop(process)
        raise
    return Gateway(ini, port, process, log_path, base_url, direct)


def stop_gateway(gateway: Gateway) -> None:
    stop(gateway.process)


# ---------------------------------------------------------------- proxies


@dataclass
class Proxy:
    kind: str
    port: int
    process: subprocess.Popen
    folder: Path
    log_path: Path
    config: str = field(repr=False)

    def url(self, host: str = APP_HOST, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def request(
        self,
        target: str,
        *,
        host: str | None = None,
        cookie: str | None = None,
        headers: list[tuple[str, str]] | tuple = (),
        method: str = "GET",
        **kwargs,
    ) -> Answer:
        """A request to the app (or ``host``) through this proxy, target and headers sent as-is."""
        sent = list(headers)
        if cookie is not None:
            sent.append(("Cookie", f"gateway_session={cookie}"))
        return raw_request(
            self.port, target, host=host or f"{APP_HOST}:{self.port}", headers=sent, method=method, **kwargs
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def doc_substitutions(*, gateway: str, app_port: int) -> dict[str, str]:
    """What every docs file gets: test host names, the gateway's and the app's addresses."""
    return {
        DOC_APP_HOST: APP_HOST,
        DOC_AUTH_HOST: AUTH_HOST,
        DOC_GATEWAY: gateway,
        DOC_APP: f"127.0.0.1:{app_port}",
    }


def start_nginx(folder: Path, *, gateway: str, app_port: int, tls: Tls, port: int | None = None, edit=None) -> Proxy:
    """nginx running ``docs/proxies/nginx.conf`` (its server blocks, in a test-owned http {} block).

    ``edit(text) -> text`` changes the rendered file, for a test that shows
    what a line of it is for.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    site = render(
        "nginx.conf",
        {
            **doc_substitutions(gateway=gateway, app_port=app_port),
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "/etc/ssl/example.com/fullchain.pem": str(tls.cert),
            "/etc/ssl/example.com/privkey.pem": str(tls.key),
        },
    )
    if edit is not None:
        site = edit(site)
    (folder / "site.conf").write_text(site)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / name).mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    log_path = folder / "nginx-error.log"
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {log_path} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(log_path), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    proxy = Proxy("nginx", port, process, folder, log_path, site)
    _wait_for_proxy(proxy)
    return proxy


def start_caddy(folder: Path, *, gateway: str, app_port: int, port: int | None = None) -> Proxy:
    """Caddy running ``docs/proxies/Caddyfile``, after a test-owned global options block.

    The global options only place Caddy: its HTTPS port, its storage under
    ``folder``, certificates from its own local CA (no ACME), no admin
    endpoint and no http->https redirect listener.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    site = render("Caddyfile", doc_substitutions(gateway=gateway, app_port=app_port))
    log_path = folder / "caddy.log"
    options = f"""{{
	admin off
	storage file_system {folder}/data
	local_certs
	skip_install_trust
	auto_https disable_redirects
	http_port {free_port()}
	https_port {port}
	default_bind 127.0.0.1
}}

"""
    config = folder / "Caddyfile"
    config.write_text(options + site)
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "xdg-data"),
        "XDG_CONFIG_HOME": str(folder / "xdg-config"),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    proxy = Proxy("caddy", port, process, folder, log_path, site)
    _wait_for_proxy(proxy)
    return proxy


def start_proxy(kind: str, folder: Path, *, gateway: str, app_port: int, tls: Tls, port: int | None = None) -> Proxy:
    if PROXIES[kind] is None:
        pytest.skip(MISSING[kind])
    if kind == "nginx":
        return start_nginx(folder, gateway=gateway, app_port=app_port, tls=tls, port=port)
    return start_caddy(folder, gateway=gateway, app_port=app_port, port=port)


def _wait_for_proxy(proxy: Proxy, timeout: float = 30.0) -> None:
    """Until the proxy answers a TLS request for the gateway's host (its /healthz)."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise AssertionError(f"{proxy.kind} exited with {proxy.process.returncode}\n{proxy.log()}")
        try:
            answer = raw_request(proxy.port, "/healthz", host=f"{AUTH_HOST}:{proxy.port}", timeout=5)
            if answer.status == 200:
                return
            error = AssertionError(f"/healthz through {proxy.kind}: {answer.status}")
        except (OSError, AssertionError) as exc:
            error = exc
        time.sleep(0.1)
    stop(proxy.process)
    raise AssertionError(f"{proxy.kind} did not answer within {timeout}s ({error})\n{proxy.log()}")


def stop_proxy(proxy: Proxy) -> None:
    stop(proxy.process)


# ---------------------------------------------------------------- Chromium


def launch_chromium(playwright):
    if not HAVE_CHROMIUM:
        pytest.skip(f"Chromium not found at {CHROMIUM}: `./dev test` installs it (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
