"""Throughput of ``GET /auth`` with a valid session, as a ratio to a bare Pyramid view.

Both run on the same server with the same settings (by default as
production.ini ships: Granian, one single-threaded worker per CPU (at least two);
``--server waitress`` runs both on one waitress process of 4 threads, the
server the benchmark was first defined on), on this machine, in the same run, one after the other, so the
ratio is meaningful on a shared, noisy machine. The load comes from ``wrk``
(Debian package ``wrk``) on loopback. Target: the gateway keeps at least 50%
of the bare view's requests/s, on SQLite and on PostgreSQL.

    .venv/bin/python bench/forward_auth.py [--seconds 10] [--connections 8]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--server granian|waitress] [--workers auto] [--threads N] [--access-log]

``--access-log`` turns the gateway's access log on (``logging.access``), one
line per request written to the server's stderr (here /dev/null), formatted
as production.ini formats it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.testing.ini import logging_sections

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
SECRET = "bench-secret-bench-secret-bench-secret-0123456789"
#: What nginx says the browser asked for: a path that a path rule decides, so every
#: request parses and normalises the URL (from a small cache) as a real proxy's would.
ORIGINAL_URL = "https://app.example.com/reports/2024/q3?view=full"
SERVER = {"server": "granian", "workers": "auto", "threads": 1}
#: With --access-log: the access log on, written as production.ini's logging section writes it.
ACCESS_LOG = {"on": False}
LOGGING = "\nlogging.access = true\n\n" + logging_sections(gateway_level="INFO")

BARE_APP = """
from pyramid.config import Configurator
from pyramid.response import Response


def ok(request):
    return Response(status=200, body=b"")


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.add_route("auth", "/auth")
        config.add_view(ok, route_name="auth")
    return config.make_wsgi_app()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_section(port: int) -> str:
    if SERVER["server"] == "waitress":
        return f"[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\nthreads = {SERVER['threads']}\n"
    return (
        f"[server:main]\nuse = egg:entra-identity-gateway#granian\nlisten = 127.0.0.1:{port}\n"
        f"workers = {SERVER['workers']}\nthreads = {SERVER['threads']}\n"
    )


def wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def serve(ini: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "pserve"), str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )


def wrk(url: str, seconds: int, connections: int, cookie: str | None) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cookie:
        command[1:1] = ["-H", f"Cookie: gateway_session={cookie}", "-H", f"X-Original-URL: {ORIGINAL_URL}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx:
        raise SystemExit(f"{non_2xx.group(1)} requests failed during the run of {url}:\n{out}")

    def ms(label):
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": ms("50"), "p99": ms("99")}


def idp_metadata(folder: Path) -> Path:
    """Entra-shaped IdP metadata with a fresh self-signed certificate (no IdP is asked)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench idp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    path = folder / "idp-metadata.xml"
    path.write_text(
        '<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sts.windows.net/bench/">'
        '<IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        '<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
        f"<X509Certificate>{cert_b64}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
        '<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"'
        ' Location="https://login.microsoftonline.com/bench/saml2"/>'
        "</IDPSSODescriptor></EntityDescriptor>"
    )
    return path


def prepare_gateway(folder: Path, database_url: str, port: int) -> tuple[Path, str]:
    """An ini, a migrated database, and one signed-in user whose cookie is returned."""
    sys.path.insert(0, str(HERE.parent))
    from gateway.db import create_engine, migrate
    from gateway.db.models import Group, GroupMember, SsoSession, User, utcnow
    from gateway.sessions import hash_token

    ini = folder / "gateway.ini"
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\n"
        "gateway.base_url = http://127.0.0.1\n"
        "gateway.plugins = entra\n"
        f"saml.idp_metadata = {idp_metadata(folder)}\n"
        f"sqlalchemy.url = {database_url.replace('%', '%%')}\n"
        f"session.secret = {SECRET}\nsession.cookie_secure = false\n"
        "forward_auth.proxy = nginx\n"
        "forward_auth.rules =\n    app.example.com /reports Staff\n    * / Staff\n"
        + (LOGGING if ACCESS_LOG["on"] else "\n")
        + server_section(port)
    )
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    token = uuid.uuid4().hex + uuid.uuid4().hex[:12]
    now = utcnow()
    with Session(engine) as session, session.begin():
        user = User(
            user_name="bench@example.com",
            user_name_key="bench@example.com",
            email="bench@example.com",
            display_name="Bench User",
        )
        group = Group(display_name="Staff", display_name_key="staff")
        session.add_all([user, group])
        session.flush()
        session.add(GroupMember(group_id=group.id, user_id=user.id))
        session.add(
            SsoSession(
                id_hash=hash_token(SECRET, token),
                user_id=user.id,
                csrf_token="x",
                last_seen_at=now,
                expires_at=now + dt.timedelta(hours=8),
            )
        )
    engine.dispose()
    return ini, token


def measure(label: str, database_url: str, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bare_app.py").write_text(BARE_APP)
        bare_port, gateway_port = free_port(), free_port()
        bare_ini = folder / "bare.ini"
        bare_ini.write_text("[app:main]\nuse = call:bare_app:main\n\n" + server_section(bare_port))
        gateway_ini, token = prepare_gateway(folder, database_url, gateway_port)
        env = dict(os.environ, PYTHONPATH=str(folder))
        bare = serve(bare_ini, env)
        gateway = serve(gateway_ini)
        try:
            wait_for(f"http://127.0.0.1:{bare_port}/auth")
            wait_for(f"http://127.0.0.1:{gateway_port}/healthz")
            check = urllib.request.Request(
                f"http://127.0.0.1:{gateway_port}/auth",
                headers={"Cookie": f"gateway_session={token}", "X-Original-URL": ORIGINAL_URL},
            )
            assert urllib.request.urlopen(check).status == 200
            # Warm up both, then alternate so drift on the machine hits both alike.
            wrk(f"http://127.0.0.1:{bare_port}/auth", 2, args.connections, None)
            wrk(f"http://127.0.0.1:{gateway_port}/auth", 2, args.connections, token)
            bare_runs, gateway_runs = [], []
            for _ in range(args.rounds):
                bare_runs.append(wrk(f"http://127.0.0.1:{bare_port}/auth", args.seconds, args.connections, None))
                gateway_runs.append(wrk(f"http://127.0.0.1:{gateway_port}/auth", args.seconds, args.connections, token))
        finally:
            for process in (bare, gateway):
                process.terminate()
                process.wait(timeout=10)
    best_bare = max(bare_runs, key=lambda r: r["rps"])
    best_gateway = max(gateway_runs, key=lambda r: r["rps"])
    ratio = best_gateway["rps"] / best_bare["rps"]
    print(
        f"{label:10s} bare view : {best_bare['rps']:8.0f} req/s  p50 {best_bare['p50']:6.2f} ms  p99 {best_bare['p99']:6.2f} ms"
    )
    print(
        f"{label:10s} /auth     : {best_gateway['rps']:8.0f} req/s  p50 {best_gateway['p50']:6.2f} ms  p99 {best_gateway['p99']:6.2f} ms"
    )
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"{label:10s} ratio     : {ratio:.2f} of the bare view ({verdict} the 0.50 target)")


def postgres_schema(url: str) -> tuple[str, callable]:
    schema = f"gw_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--server", choices=["granian", "waitress"], default="granian")
    parser.add_argument(
        "--workers", default="auto", help="Granian worker processes (default auto: one per CPU, at least two)"
    )
    parser.add_argument("--threads", type=int, help="threads per worker (default 1 on Granian, 4 on waitress)")
    parser.add_argument("--access-log", action="store_true", help="the gateway's access log on (logging.access)")
    args = parser.parse_args()
    ACCESS_LOG["on"] = args.access_log
    SERVER.update(
        server=args.server, workers=args.workers, threads=args.threads or (1 if args.server == "granian" else 4)
    )
    if not shutil.which("wrk"):
        raise SystemExit("bench/forward_auth.py needs wrk: apt-get install wrk")
    server = (
        f"Granian: {SERVER['workers']} workers of {SERVER['threads']} threads"
        if args.server == "granian"
        else f"waitress: 1 process, {SERVER['threads']} threads"
    )
    print(
        f"{server}; wrk: 1 thread, {args.connections} connections, "
        f"{args.rounds} x {args.seconds} s each, best round shown"
        + ("; gateway access log on" if args.access_log else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        measure("SQLite", f"sqlite:///{tmp}/bench.sqlite", args)
    if not args.skip_postgres:
        url, drop = postgres_schema(args.postgres)
        try:
            measure("PostgreSQL", url, args)
        finally:
            drop()


if __name__ == "__main__":
    main()
