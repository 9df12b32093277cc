"""Fault tests: PostgreSQL goes away under SCIM and forward-auth load.

A throwaway cluster of this test's own (initdb into a temporary folder, on a
free port; the shared server is never touched) serves pserve with two
workers. While SCIM creates and /auth checks run, the cluster is stopped and
started again: during the outage every answer is a clean 503 with
Retry-After (SCIM JSON, an empty /auth, a page for browsers), never a 500;
afterwards the gateway recovers without a restart within 10 s, the person
signed in before is still signed in, and every acknowledged write is there
exactly once. /auth answers 503 for that person during the outage too,
though their identity was in memory: a deactivation could not arrive.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from scim_support import http
from test_serve import _children

pytestmark = [pytest.mark.slow]

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """A PostgreSQL cluster in a folder of its own; as root, run as the postgres user."""

    def __init__(self, bin_dir: Path, folder: Path, port: int):
        self.bin, self.folder, self.port = bin_dir, folder, port
        self.data = folder / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def cluster():
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    folder = Path(tempfile.mkdtemp(prefix="gw-fault-pg-"))
    os.chmod(folder, 0o755)
    cluster = Cluster(bin_dir, folder, free_port())
    cluster.start()
    yield cluster
    try:
        cluster.stop()
    except subprocess.CalledProcessError:
        pass  # already stopped
    shutil.rmtree(folder, ignore_errors=True)


def get(url: str, cookie: str | None = None):
    """(status, headers, body) without following redirects."""
    request = urllib.request.Request(url)
    if cookie:
        request.add_header("Cookie", cookie)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def user_names(gateway, token: str) -> list[str]:
    """Every stored userName, page by page."""
    stored: list[str] = []
    start_index = 1
    while True:
        status, page = http(
            "GET", f"{gateway.scim_url}/Users?attributes=userName&count=500&startIndex={start_index}", token
        )
        assert status == 200
        stored += [r["userName"] for r in page["Resources"]]
        start_index += len(page["Resources"])
        if not page["Resources"] or start_index > page["totalResults"]:
            return stored


def signed_in_cookie(gateway, url: str, token: str) -> str:
    """A session as a sign-in makes it, written straight into the database:
    so /auth has a person whose identity the gateway also keeps in memory."""
    import datetime as dt
    import secrets

    import sqlalchemy as sa

    from conftest import SESSION_SECRET
    from gateway.db.models import SsoSession, utcnow
    from gateway.sessions import hash_token
    from scim_support import http as scim_http

    status, user = scim_http(
        "POST", gateway.scim_url + "/Users", token, {"schemas": [USER], "userName": "held@fault.example"}
    )
    assert status == 201
    value = secrets.token_urlsafe(32)
    engine = sa.create_engine(url)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(SsoSession).values(
                id_hash=hash_token(SESSION_SECRET, value),
                user_id=user["id"],
                created_at=now,
                last_seen_at=now,
                expires_at=now + dt.timedelta(hours=8),
                csrf_token="x",
            )
        )
    engine.dispose()
    return f"gateway_session={value}"


def test_postgresql_stopped_under_load_is_503_then_recovers_with_every_write_once(cluster, live_gateway):
    gateway = live_gateway(cluster.url, server={"workers": "2"})
    token = gateway.token("fault")
    cookie = signed_in_cookie(gateway, cluster.url, token)
    assert get(gateway.url + "/auth", cookie)[0] == 200
    outcomes: list[tuple[float, str, int]] = []
    acknowledged: list[str] = []
    attempted: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def creates(worker: int):
        n = 0
        while not stop.is_set():
            name = f"w{worker}-{n}@fault.example"
            n += 1
            attempted.append(name)
            try:
                status, body = http("POST", gateway.scim_url + "/Users", token, {"schemas": [USER], "userName": name})
            except OSError as exc:
                failures.append(f"POST {name}: {exc}")
                continue
            outcomes.append((time.monotonic(), "scim", status))
            if status == 201:
                acknowledged.append(name)
            elif status == 503:
                assert body["status"] == "503" and body["schemas"], body
            else:
                failures.append(f"POST {name}: {status} {body}")

    def checks():
        while not stop.is_set():
            try:
                status, headers, body = get(gateway.url + "/auth", cookie)
            except OSError as exc:
                failures.append(f"/auth: {exc}")
                continue
            outcomes.append((time.monotonic(), "auth", status))
            if status == 503:
                if body != b"" or headers["Retry-After"] != "5":
                    failures.append(f"/auth 503 with {body!r} {dict(headers)}")
            elif status != 200:  # a signed-in person, before and after the outage
                failures.append(f"/auth: {status}")

    threads = [threading.Thread(target=creates, args=(i,)) for i in range(3)] + [threading.Thread(target=checks)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        cluster.stop()
        down_at = time.monotonic()
        time.sleep(1)
        # Browser routes during the outage: a page with the reference, never a 500.
        status, headers, body = get(gateway.url + "/", cookie)
        assert status == 503 and headers["Retry-After"] == "5" and b"Temporarily unavailable" in body
        assert headers["X-Request-Id"].encode() in body
        status, headers, body = get(gateway.url + "/saml/login")
        assert status == 503 and b"Temporarily unavailable" in body and headers["Content-Type"].startswith("text/html")
        status, headers, _ = get(gateway.url + "/readyz")
        assert status == 503
        assert get(gateway.url + "/healthz")[0] == 200
        time.sleep(3)
        up_at = time.monotonic()  # before: the server may accept connections before pg_ctl returns
        cluster.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recent = [o for o in outcomes if o[0] > time.monotonic() - 0.5]
            if any(kind == "scim" and status == 201 for _, kind, status in recent) and any(
                kind == "auth" and status < 500 for _, kind, status in recent
            ):
                break
            time.sleep(0.1)
        recovered_at = time.monotonic()
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert recovered_at < deadline, "no successful SCIM create and /auth check within 10 s of the database's return"
    during = [(kind, status) for t, kind, status in outcomes if down_at + 0.5 < t < up_at]
    assert during and all(status == 503 for _, status in during), sorted(set(during))
    assert not failures, failures[:10]
    assert get(gateway.url + "/readyz")[0] == 200

    # Every acknowledged create is there exactly once; nothing appeared that was not attempted.
    stored = user_names(gateway, token)
    assert len(stored) == len(set(stored))
    assert set(acknowledged) <= set(stored)
    assert set(stored) <= set(attempted) | {"held@fault.example"}
    assert len(acknowledged) > 20


def _wait_for_workers(pid: int, count: int, within: float = 30.0) -> set[int]:
    """The worker processes once there are ``count`` (a replacement loads the app first)."""
    deadline = time.monotonic() + within
    while len(workers := _children(pid)) != count:
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)
    return workers


@pytest.mark.postgres
def test_a_worker_killed_under_scim_load_loses_no_acknowledged_write(postgres_url, live_gateway):
    import signal

    gateway = live_gateway(postgres_url, server={"workers": "2"})
    token = gateway.token("kill")
    acknowledged: list[str] = []
    attempted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def creates(worker: int):
        n = 0
        while not stop.is_set():
            name = f"k{worker}-{n}@kill.example"
            n += 1
            attempted.append(name)
            try:
                status, body = http("POST", gateway.scim_url + "/Users", token, {"schemas": [USER], "userName": name})
            except OSError:
                continue  # the connection died with its worker: not acknowledged, maybe written
            if status == 201:
                acknowledged.append(name)
            else:
                refused.append(f"{name}: {status} {body}")

    threads = [threading.Thread(target=creates, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            time.sleep(1.5)
            workers = _wait_for_workers(gateway.process.pid, 2)
            os.kill(min(workers), signal.SIGKILL)
        before = len(acknowledged)
        deadline = time.monotonic() + 30
        while len(acknowledged) <= before + 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(acknowledged) > before + 10, "the service did not continue after the kills"
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    _wait_for_workers(gateway.process.pid, 2)  # replaced
    assert not refused, refused[:10]
    stored = user_names(gateway, token)
    assert len(stored) == len(set(stored))
    assert set(acknowledged) <= set(stored) <= set(attempted)
