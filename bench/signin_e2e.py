"""Whole browser-style SAML sign-ins per second over HTTP: the gateway under ``pserve`` against a stock pysaml2 SP.

    .venv/bin/python bench/signin_e2e.py [--rounds 3] [--signins 120] [--concurrency 8]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--skip-postgres] [--sqlite]
        [--workers auto]

Two servers, both on Granian through ``pserve`` with the same worker count
(default ``auto``, as production.ini ships: one single-threaded worker per
CPU, at least two), trusting the same IdP metadata (the test IdP of
``gateway.testing.saml``, Entra-shaped, assertion signed RSA-SHA256):

* the gateway, production settings (``saml.crypto_backend`` default,
  ``inprocess``), on PostgreSQL in a database of its own made for the run
  (and on SQLite with ``--sqlite``);
* a stock pysaml2 SP: a small WSGI app using ``Saml2Client`` with its
  defaults (the ``xmlsec1`` program, pysaml2's own schema validation), the
  request id and then the identity kept in HMAC-signed cookies (no database);
  ``/login``, ``/acs``, ``/whoami``.

A sign-in is what a browser does: GET the login URL (a redirect carrying the
AuthnRequest; its id is read from it), the IdP's signed response for that id
POSTed to the ACS with the cookies the login set, and the redirect followed
to a page showing the identity (``/whoami``), which is checked. Every request
is on a new connection. The IdP's signing is the client's cost, so it is
kept out of the measured time, the same for both: each batch runs its logins
(measured), then the IdP signs the responses (not measured), then the
ACS posts and the pages (measured). ``--concurrency`` browsers at a time.

The two targets take turns, one batch each per round (the order swapping
every round), so load on the shared machine hits both alike. Printed: each
round's sign-ins/s, each target's total (sign-ins over measured seconds)
and the ratio gateway / stock (target, issue 14: at least 4x); and the CPU
time per sign-in of each server (its processes, the xmlsec1 runs they
waited for, and for the gateway the PostgreSQL backends of its database),
which a loaded machine changes less than the rates.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret-0123456789"

STOCK_SP = '''
"""A stock pysaml2 SP: Saml2Client with its defaults (xmlsec1, its own schema validation)."""

import base64, hashlib, hmac, json, os
from urllib.parse import parse_qs

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig

SECRET = os.environb[b"STOCK_SP_SECRET"]


def seal(value):
    data = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
    return data + "." + hmac.new(SECRET, data.encode(), hashlib.sha256).hexdigest()


def unseal(text):
    data, _, mac = (text or "").rpartition(".")
    if not data or not hmac.compare_digest(mac, hmac.new(SECRET, data.encode(), hashlib.sha256).hexdigest()):
        return None
    return json.loads(base64.urlsafe_b64decode(data))


def cookies(environ):
    out = {}
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        out[name] = value
    return out


def main(global_config, base_url, metadata):
    config = SPConfig()
    config.load({
        "entityid": base_url + "/metadata",
        "metadata": {"local": [metadata]},
        "service": {"sp": {
            "endpoints": {"assertion_consumer_service": [(base_url + "/acs", BINDING_HTTP_POST)]},
            # Entra signs the assertion, not the Response.
            "want_response_signed": False,
            "want_assertions_signed": True,
            "allow_unknown_attributes": True,
        }},
    })
    client = Saml2Client(config)

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/login":
            request_id, info = client.prepare_for_authenticate(binding=BINDING_HTTP_REDIRECT)
            start_response("303 See Other", [
                ("Location", dict(info["headers"])["Location"]),
                ("Set-Cookie", "sp_request=" + seal(request_id) + "; Path=/; HttpOnly"),
            ])
            return [b""]
        if path == "/acs" and environ["REQUEST_METHOD"] == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            form = parse_qs(environ["wsgi.input"].read(size).decode())
            request_id = unseal(cookies(environ).get("sp_request"))
            try:
                response = client.parse_authn_request_response(
                    form["SAMLResponse"][0], BINDING_HTTP_POST, outstanding={request_id: "/whoami"} if request_id else {}
                )
            except Exception as exc:  # a refusal, as a stock SP shows it
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [f"{exc.__class__.__name__}".encode()]
            identity = {"name_id": response.name_id.text, "attributes": response.get_identity()}
            start_response("303 See Other", [
                ("Location", base_url + "/whoami"),
                ("Set-Cookie", "sp_session=" + seal(identity) + "; Path=/; HttpOnly"),
                ("Set-Cookie", "sp_request=; Path=/; Max-Age=0"),
            ])
            return [b""]
        if path == "/whoami":
            identity = unseal(cookies(environ).get("sp_session"))
            if identity is None:
                start_response("401 Unauthorized", [("Content-Type", "application/json")])
                return [b'{"error": "not signed in"}']
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"userName": identity["name_id"], "attributes": identity["attributes"]}).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return app
'''


# ---------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_section(port: int, workers: str) -> str:
    return (
        f"[server:main]\nuse = egg:entra-identity-gateway#granian\nlisten = 127.0.0.1:{port}\n"
        f"workers = {workers}\nthreads = 1\n"
    )


def serve(ini: Path, env: dict) -> subprocess.Popen:
    log = open(ini.with_suffix(".log"), "wb")
    return subprocess.Popen(
        [str(BIN / "pserve"), str(ini)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ini.parent
    )


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server of {url} stopped:\n{log.read_text()[-3000:]}")
        try:
            status, _headers, _body = request("GET", url)
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def server_env(folder: Path, name: str) -> dict:
    # Each server gets its own metrics directory (gateway/metrics/directory.py), never this process's.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(folder / f"metrics-{name}")
    return env


# ---------------------------------------------------------------- CPU time


TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the state on (the name may hold spaces)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (Granian's workers, their xmlsec1 runs)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_of(pids) -> float:
    """CPU seconds used by ``pids``, with the children they waited for (xmlsec1 runs)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / TICK


class CpuMeter:
    """CPU seconds of a server's processes and of the PostgreSQL backends serving its database."""

    def __init__(self, server: subprocess.Popen, database_url: str | None):
        self.server = server
        self.engine = sa.create_engine(database_url) if database_url else None

    def backends(self) -> list[int]:
        if self.engine is None:
            return []
        with self.engine.connect() as connection:
            return list(
                connection.scalars(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )

    def read(self) -> float:
        return self.read_server() + self.read_database()

    def read_server(self) -> float:
        return cpu_of(process_tree(self.server.pid))

    def read_database(self) -> float:
        return cpu_of(self.backends())


# ---------------------------------------------------------------- the browser


def request(method: str, url: str, body: bytes | None = None, cookies: dict | None = None):
    """One request on a new connection: (status, headers, body).

    A plain socket, not http.client: the load generator shares the machine's
    cores with both servers, so it is kept lean (its CPU per request is the
    same for both targets, and it is measured: see the CPU lines printed).
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    if cookies:
        head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    if body is not None:
        head += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (body or b""))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw_head, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in ",".join(headers.get("transfer-encoding", ())).lower():
        content = dechunk(content)
    return int(lines[0].split(" ", 2)[1]), headers, content


def dechunk(data: bytes) -> bytes:
    out, rest = [], data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


def keep_cookies(jar: dict, headers: dict) -> None:
    for header in headers.get("set-cookie", ()):
        pair, *attributes = header.split(";")
        name, _, value = pair.strip().partition("=")
        if not value or any(a.strip().lower() == "max-age=0" for a in attributes):
            jar.pop(name, None)
        else:
            jar[name] = value


def request_id_of(location: str) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    return re.search(r' ID="([^"]+)"', xml).group(1)


class Target:
    def __init__(self, name: str, base: str, login_path: str, acs_path: str, whoami_path: str):
        self.name, self.base = name, base
        self.meter: CpuMeter | None = None
        self.database_cpu = 0.0  # the PostgreSQL backends' part of the measured CPU
        self.login_path, self.acs_path, self.whoami_path = login_path, acs_path, whoami_path
        self.entity_id = base + ("/saml/metadata" if name != "stock" else "/metadata")

    def login(self, browser: dict) -> None:
        status, headers, _ = request("GET", self.base + self.login_path, cookies=browser["cookies"])
        if status not in (302, 303):
            raise SystemExit(f"{self.name}: login answered {status}")
        keep_cookies(browser["cookies"], headers)
        browser["request_id"] = request_id_of(headers["location"][0])

    def finish(self, browser: dict) -> None:
        status, headers, text = request("POST", self.base + self.acs_path, browser["form"], browser["cookies"])
        if status != 303:
            raise SystemExit(f"{self.name}: ACS answered {status}: {text[:300]!r}")
        keep_cookies(browser["cookies"], headers)
        location = headers["location"][0]
        if not location.startswith(self.base + self.whoami_path):
            raise SystemExit(f"{self.name}: ACS sent the browser to {location}")
        status, _headers, text = request("GET", location, cookies=browser["cookies"])
        shown = json.loads(text).get("userName") if status == 200 else None
        if shown != browser["name"]:
            raise SystemExit(f"{self.name}: /whoami answered {status} {text[:300]!r} for {browser['name']}")


def batch(target: Target, idp, names: list[str], pool: ThreadPoolExecutor) -> tuple[float, float]:
    """Sign ``names`` in at ``target``, ``pool`` browsers at a time; the measured seconds and server CPU seconds."""
    from gateway.testing.saml import stable_oid

    browsers = [{"name": name, "cookies": {}} for name in names]
    database = -target.meter.read_database()
    cpu = -target.meter.read()
    start = time.perf_counter()
    list(pool.map(target.login, browsers))
    measured = time.perf_counter() - start
    cpu += target.meter.read()
    database += target.meter.read_database()

    def sign(browser):
        attributes = idp.claims(browser["name"], oid=stable_oid(browser["name"]))
        xml = idp.response(
            browser["request_id"],
            name_id=browser["name"],
            attributes=attributes,
            audience=target.entity_id,
            recipient=target.base + target.acs_path,
            destination=target.base + target.acs_path,
        )
        # The IdP's page posts this form (its encoding is the IdP's side too).
        browser["form"] = urllib.parse.urlencode({"SAMLResponse": base64.b64encode(xml.encode()).decode()}).encode()

    list(pool.map(sign, browsers))  # the IdP's work: not measured
    cpu -= target.meter.read()
    database -= target.meter.read_database()
    start = time.perf_counter()
    list(pool.map(target.finish, browsers))
    measured += time.perf_counter() - start
    target.database_cpu += database + target.meter.read_database()
    return measured, cpu + target.meter.read()


# ---------------------------------------------------------------- one comparison


def compare(label: str, database_url: str, args, folder: Path) -> float:
    from gateway.testing.saml import TestIdp, make_keypair

    keys = make_keypair(folder, "idp")
    idp = TestIdp(folder, keys, keys, keys)
    metadata = folder / "idp-metadata.xml"
    metadata.write_bytes(idp.metadata(bom=False))

    gateway_port, stock_port = free_port(), free_port()
    gateway_ini = folder / "gateway.ini"
    gateway_ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\n"
        f"gateway.base_url = http://127.0.0.1:{gateway_port}\n"
        "gateway.plugins = entra\n"
        f"saml.idp_metadata = {metadata}\n"
        f"sqlalchemy.url = {database_url.replace('%', '%%')}\n"
        f"session.secret = {SECRET}\nsession.cookie_secure = false\n\n" + server_section(gateway_port, args.workers)
    )
    subprocess.run([str(BIN / "gateway"), str(gateway_ini), "migrate"], check=True, capture_output=True, timeout=120)
    (folder / "stock_sp.py").write_text(STOCK_SP)
    stock_ini = folder / "stock.ini"
    stock_ini.write_text(
        "[app:main]\nuse = call:stock_sp:main\n"
        f"base_url = http://127.0.0.1:{stock_port}\nmetadata = {metadata}\n\n"
        + server_section(stock_port, args.workers)
    )
    stock_env = server_env(folder, "stock")
    stock_env.update(PYTHONPATH=str(folder), STOCK_SP_SECRET=SECRET)
    servers = [serve(gateway_ini, server_env(folder, "gateway")), serve(stock_ini, stock_env)]
    targets = [
        Target("gateway", f"http://127.0.0.1:{gateway_port}", "/saml/login?next=/whoami", "/saml/acs", "/whoami"),
        Target("stock", f"http://127.0.0.1:{stock_port}", "/login", "/acs", "/whoami"),
    ]
    postgres = database_url if database_url.startswith("postgresql") else None
    targets[0].meter, targets[1].meter = CpuMeter(servers[0], postgres), CpuMeter(servers[1], None)
    try:
        wait_for(targets[0].base + "/healthz", servers[0], gateway_ini.with_suffix(".log"))
        wait_for(targets[1].base + "/whoami", servers[1], stock_ini.with_suffix(".log"))
        seconds = {t.name: 0.0 for t in targets}
        cpu = {t.name: 0.0 for t in targets}
        done = {t.name: 0 for t in targets}
        people = [f"person{i}@example.com" for i in range(args.people)]
        with ThreadPoolExecutor(args.concurrency) as pool:
            for target in targets:  # warm-up: every worker loads, compiles and connects
                batch(target, idp, people[: 4 * args.concurrency], pool)
                target.database_cpu = 0.0
            for round_no in range(args.rounds):
                order = targets if round_no % 2 == 0 else targets[::-1]
                names = [people[(round_no * args.signins + i) % len(people)] for i in range(args.signins)]
                figures = {}
                for target in order:
                    elapsed, used = batch(target, idp, names, pool)
                    seconds[target.name] += elapsed
                    cpu[target.name] += used
                    done[target.name] += len(names)
                    figures[target.name] = len(names) / elapsed
                print(
                    f"{label:10s} round {round_no + 1}: gateway {figures['gateway']:6.1f}/s  stock {figures['stock']:6.1f}/s"
                    f"  ratio {figures['gateway'] / figures['stock']:.2f}",
                    flush=True,
                )
    finally:
        for process in servers:
            process.terminate()
        for process in servers:
            process.wait(timeout=30)
        for target in targets:
            if target.meter.engine is not None:
                target.meter.engine.dispose()
    rates = {name: done[name] / seconds[name] for name in seconds}
    per = {name: cpu[name] / done[name] * 1000 for name in cpu}
    ratio = rates["gateway"] / rates["stock"]
    for target, text in zip(targets, ("gateway      ", "stock pysaml2"), strict=True):
        name = target.name
        database = (
            f" ({target.database_cpu / done[name] * 1000:.1f} of them PostgreSQL's)" if target.meter.engine else ""
        )
        print(
            f"{label:10s} {text}: {rates[name]:6.1f} sign-ins/s ({done[name]} in {seconds[name]:.1f} s),"
            f" server CPU {per[name]:6.1f} ms per sign-in{database}"
        )
    verdict = "meets" if ratio >= 4 else "MISSES"
    print(
        f"{label:10s} ratio        : {ratio:.2f} ({verdict} the 4x target); CPU per sign-in, stock / gateway:"
        f" {per['stock'] / per['gateway']:.2f}",
        flush=True,
    )
    return ratio


def own_postgres_database(url: str) -> tuple[str, callable]:
    """A PostgreSQL database made for this run (dropped at the end), on the server of ``url``."""
    name = f"signin_e2e_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--signins", type=int, default=120, help="sign-ins per target per round")
    parser.add_argument("--concurrency", type=int, default=8, help="browsers at a time")
    parser.add_argument(
        "--people", type=int, default=200, help="distinct people signing in (each first one creates a user)"
    )
    parser.add_argument("--workers", default="auto", help="Granian worker processes of each server (default auto)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--sqlite", action="store_true", help="also run the gateway on SQLite")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(
        f"Granian, {args.workers} workers of 1 thread each, for both; {args.concurrency} browsers at a time; "
        f"{args.rounds} rounds of {args.signins} sign-ins per target, taking turns; new connection per request",
        flush=True,
    )
    if not args.skip_postgres:
        url, drop = own_postgres_database(args.postgres)
        try:
            with tempfile.TemporaryDirectory(prefix="signin-e2e-") as tmp:
                compare("PostgreSQL", url, args, Path(tmp))
        finally:
            drop()
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="signin-e2e-") as tmp:
            compare("SQLite", f"sqlite:///{tmp}/gateway.sqlite", args, Path(tmp))


if __name__ == "__main__":
    main()
