"""Soak: steady mixed load on pserve with two workers on PostgreSQL, one line a minute.

    .venv/bin/python bench/soak.py [--minutes 30] [--database URL] [--tracemalloc]

Serves the gateway with pserve (Granian, two workers) on a PostgreSQL
database of its own (``--database``, default ``gateway_soak`` on the local
server, dropped and created afresh), with a test IdP's metadata (the suite's
Entra-shaped IdP, keys made in a temporary folder). Then, at a steady modest
rate, from a few client threads:

* signed SP-initiated sign-ins (``GET /saml/login`` then ``POST /saml/acs``
  with a response the test IdP signs, each as one of 500 people, so people
  sign in again and again and each sign-in makes a session);
* ``/auth`` checks with the sessions made so far;
* SCIM writes: a create, then a PATCH of a user created before.

Every minute it prints the requests and errors of that minute, the resident
memory (RSS, from ``/proc``) of each worker process, and the row counts of
``sessions``, ``audit_events`` and ``users``. A request that answers
anything other than what it should (303, 200, 201/200) counts as an error;
the first few are printed.

``--tracemalloc``: the workers start tracemalloc (25 frames) after their
first interval and write a snapshot to the work folder every interval after
that (``worker-<pid>-<minute>.snap``),
so the growth between two minutes can be compared by allocation site
(``--compare A B`` prints the top differences). With each snapshot they note
their full collections so far and the objects in the collector's oldest
generation (``worker-<pid>.gc``); when the load stops, each runs a full
collection and the soak prints what that freed: memory that goes then was
garbage waiting for the collector, not held. It slows the workers; memory
figures for the docs come from runs without it.

A benchmark, not a test: nothing here asserts. ``tests/test_soak.py`` runs
it for a few seconds to keep it working.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from gateway.testing.ini import logging_sections

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PEOPLE = 500

SITECUSTOMIZE = """
import gc, os, sys, threading, time, tracemalloc

def _gc_line(folder, minute, **extra):
    # Full collections so far and what waits in generation 2 for the next one (cheap next to a snapshot).
    line = dict(minute=minute, full=gc.get_stats()[2]["collections"], gen2=len(gc.get_objects(2)), **extra)
    with open(os.path.join(folder, f"worker-{os.getpid()}.gc"), "a") as out:
        out.write(repr(line) + "\\n")

def _snapshots(folder=os.environ["SOAK_SNAPSHOT_DIR"], every=float(os.environ["SOAK_SNAPSHOT_EVERY"])):
    # Tracing from start-up would slow the import of everything tenfold; what grows later is what matters.
    time.sleep(every)
    tracemalloc.start(25)
    minute, next_at = 0, time.monotonic() + every
    while True:
        if os.path.exists(os.path.join(folder, "collect")):
            # The soak is over: is what grew garbage a full collection frees, or still reachable?
            before = tracemalloc.get_traced_memory()[0]
            freed = gc.collect()
            tracemalloc.take_snapshot().dump(os.path.join(folder, f"worker-{os.getpid()}-collected.snap"))
            _gc_line(folder, "end", freed=freed, traced_before=before, traced_after=tracemalloc.get_traced_memory()[0])
            return
        if time.monotonic() < next_at:
            time.sleep(0.5)
            continue
        next_at += every
        minute += 1
        tracemalloc.take_snapshot().dump(os.path.join(folder, f"worker-{os.getpid()}-{minute:03d}.snap"))
        _gc_line(folder, minute, traced=tracemalloc.get_traced_memory()[0])

if "--multiprocessing-fork" in sys.argv:  # a spawned worker, not pserve's master
    threading.Thread(target=_snapshots, daemon=True, name="soak-tracemalloc").start()
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument(
        "--database",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/gateway_soak",
        help="a PostgreSQL database of the soak's own: dropped and created afresh",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--signins", type=float, default=2.0, help="sign-ins a second (default 2)")
    parser.add_argument("--auth", type=float, default=30.0, help="/auth checks a second (default 30)")
    parser.add_argument("--scim", type=float, default=4.0, help="SCIM writes a second (default 4)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between report lines (default 60)")
    parser.add_argument("--workdir", help="folder for keys, ini and logs (default: a new temporary folder)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="snapshots of the workers' allocations each interval"
    )
    parser.add_argument(
        "--compare", nargs=2, metavar="SNAPSHOT", help="print the top growth between two snapshots and exit"
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------- database


def fresh_database(url: str) -> None:
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def table_sizes(engine) -> dict[str, int]:
    import sqlalchemy as sa

    with engine.connect() as connection:
        return {
            table: connection.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("sessions", "audit_events", "users")
        }


# ---------------------------------------------------------------- server


def write_ini(folder: Path, database: str, port: int, metadata: str, workers: int) -> Path:
    ini = folder / "soak.ini"
    ini.write_text(
        "\n".join(
            [
                "[app:main]",
                "use = egg:entra-identity-gateway",
                f"gateway.base_url = http://127.0.0.1:{port}",
                "gateway.plugins = entra sqlstore audit",
                f"sqlalchemy.url = {database.replace('%', '%%')}",
                f"saml.idp_metadata = {metadata}",
                "provisioning.mode = scim first_login",
                "session.secret = soak-secret-soak-secret-soak-secret-0123456789",
                "session.cookie_secure = false",
                "",
                "[server:main]",
                "use = egg:entra-identity-gateway#granian",
                f"listen = 127.0.0.1:{port}",
                f"workers = {workers}",
                "",
                *logging_sections().splitlines(),
                "",
            ]
        )
    )
    return ini


def workers_of(pid: int) -> list[int]:
    """pserve's worker processes: its spawned children (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pserve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 300 s:\n{log.read_text()}")


# ---------------------------------------------------------------- load


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.shown = 0
        self.kinds: dict[str, int] = {}

    def add(self, kind: str, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.requests += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if not ok:
                self.errors += 1
                if self.shown < 10:
                    self.shown += 1
                    print(f"  error ({kind}): {detail[:300]}", file=sys.stderr, flush=True)

    def take(self) -> tuple[int, int, dict[str, int]]:
        with self.lock:
            out = (self.requests, self.errors, self.kinds)
            self.requests, self.errors, self.kinds = 0, 0, {}
            return out


def paced(rate: float, stop: threading.Event):
    """Yield at ``rate`` a second on a fixed schedule (a slow answer does not lower the rate later)."""
    if rate <= 0:
        return
    period, next_at = 1.0 / rate, time.monotonic()
    while not stop.is_set():
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        yield


def signins(base: str, idp, tally: Tally, sessions: list, stop: threading.Event, rate: float, seed: int):
    import requests

    from gateway.testing.saml import b64, stable_oid

    rng = random.Random(seed)
    acs = base + "/saml/acs"
    for _ in paced(rate, stop):
        name = f"person{rng.randrange(PEOPLE)}@soak.example"
        browser = requests.Session()
        try:
            login = browser.get(base + "/saml/login", allow_redirects=False, timeout=30)
            if login.status_code != 303:
                tally.add("login", False, f"GET /saml/login {login.status_code}")
                continue
            tally.add("login", True)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(login.headers["Location"]).query)
            import base64
            import zlib

            request_xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
            request_id = re.search(r' ID="([^"]+)"', request_xml).group(1)
            xml = idp.response(
                request_id,
                name_id=name,
                attributes=idp.claims(name, oid=stable_oid(name)),
                audience=base + "/saml/metadata",
                recipient=acs,
                destination=acs,
            )
            answer = browser.post(acs, data={"SAMLResponse": b64(xml)}, allow_redirects=False, timeout=30)
            cookie = browser.cookies.get("gateway_session")
            ok = answer.status_code == 303 and cookie is not None
            tally.add("acs", ok, f"POST /saml/acs {answer.status_code} {answer.text[:200]}")
            if ok:
                sessions.append(cookie)
                del sessions[:-2000]  # the most recent sign-ins
        except requests.RequestException as exc:
            tally.add("acs", False, repr(exc))


def auth_checks(base: str, tally: Tally, sessions: list, stop: threading.Event, rate: float, seed: int):
    import requests

    rng = random.Random(seed)
    client = requests.Session()
    for _ in paced(rate, stop):
        if not sessions:
            continue
        cookie = rng.choice(sessions)
        try:
            answer = client.get(
                base + "/auth", headers={"Cookie": f"gateway_session={cookie}"}, allow_redirects=False, timeout=30
            )
            # 401 is right for a session a later sign-in of the same person did not end: no ending here.
            tally.add("auth", answer.status_code == 200, f"/auth {answer.status_code}")
        except requests.RequestException as exc:
            tally.add("auth", False, repr(exc))


def scim_writes(base: str, token: str, tally: Tally, stop: threading.Event, rate: float, seed: int):
    import requests

    rng = random.Random(seed)
    client = requests.Session()
    client.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
    created: list[str] = []
    counter = itertools.count()
    for _ in paced(rate, stop):
        try:
            if created and next(counter) % 2:
                user_id = rng.choice(created)
                body = {
                    "schemas": [PATCH],
                    "Operations": [
                        {"op": "replace", "path": "title", "value": f"Title {rng.randrange(10**6)}"},
                        {"op": "replace", "path": "active", "value": rng.random() > 0.1},
                    ],
                }
                answer = client.patch(f"{base}/scim/v2/Users/{user_id}", json=body, timeout=30)
                tally.add("scim", answer.status_code in (200, 204), f"PATCH {answer.status_code} {answer.text[:200]}")
            else:
                name = f"scim-{seed}-{rng.randrange(10**12)}@soak.example"
                body = {
                    "schemas": [USER],
                    "userName": name,
                    "externalId": name,
                    "active": True,
                    "displayName": name.split("@")[0],
                    "emails": [{"value": name, "type": "work", "primary": True}],
                }
                answer = client.post(f"{base}/scim/v2/Users", json=body, timeout=30)
                ok = answer.status_code == 201
                tally.add("scim", ok, f"POST {answer.status_code} {answer.text[:200]}")
                if ok:
                    created.append(answer.json()["id"])
                    del created[:-1000]
        except requests.RequestException as exc:
            tally.add("scim", False, repr(exc))


# ---------------------------------------------------------------- main


def compare(first: str, second: str, top: int = 25) -> None:
    import tracemalloc

    old, new = tracemalloc.Snapshot.load(first), tracemalloc.Snapshot.load(second)
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    old, new = old.filter_traces(ignore), new.filter_traces(ignore)
    total = sum(s.size for s in new.statistics("filename")) - sum(s.size for s in old.statistics("filename"))
    print(f"traced growth: {total / 1024:+.1f} KiB")
    for stat in new.compare_to(old, "traceback")[:top]:
        print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-12:]:
            print("    " + line)


def collected(folder: Path, workers: list[int], timeout: float = 180.0) -> None:
    """Have each worker run a full collection now, and print its generation 2 over the run and what that freed."""
    import ast

    def ended(pid: int) -> bool:
        path = folder / f"worker-{pid}.gc"
        return path.exists() and "'end'" in path.read_text()

    (folder / "collect").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(ended(pid) for pid in workers):
        time.sleep(0.5)
    for pid in workers:
        path = folder / f"worker-{pid}.gc"
        lines = [ast.literal_eval(line) for line in path.read_text().splitlines()] if path.exists() else []
        minutes = [line for line in lines if line["minute"] != "end"]
        end = next((line for line in lines if line["minute"] == "end"), None)
        if not minutes or end is None:
            print(f"gc[{pid}]: no record")
            continue
        first, last = minutes[0], minutes[-1]
        print(
            f"gc[{pid}]: full collections {first['full']} at snapshot {first['minute']}, {last['full']} at"
            f" {last['minute']}; generation 2 objects {first['gen2']} -> {last['gen2']}; gc.collect() at the end"
            f" freed {end['freed']} objects, traced {end['traced_before'] / 2**20:.2f} ->"
            f" {end['traced_after'] / 2**20:.2f} MB (snapshot {first['minute']}: {first['traced'] / 2**20:.2f} MB)"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    import sqlalchemy as sa

    from gateway.testing.saml import TestIdp, make_keypair
    from scim_support import run_cli

    folder = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    keys = make_keypair(folder, "idp")
    idp = TestIdp(folder, keys, keys, keys)
    metadata = idp.write_metadata()
    fresh_database(args.database)
    port = free_port()
    ini = write_ini(folder, args.database, port, metadata, args.workers)
    run_cli(ini, "migrate")
    token = next(
        line.strip()
        for line in run_cli(ini, "token", "create", "soak").stdout.splitlines()
        if line.strip().startswith("gws_")
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if args.tracemalloc:
        site = folder / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env.update(
            PYTHONPATH=f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}",
            SOAK_SNAPSHOT_DIR=str(folder),
            SOAK_SNAPSHOT_EVERY=str(args.interval),
        )
    log = folder / "pserve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(BIN / "pserve"), str(ini)], stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=env
        )
    base = f"http://127.0.0.1:{port}"
    engine = sa.create_engine(args.database)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        wait_until_up(base, server, log)
        tally, sessions = Tally(), []
        threads += [
            threading.Thread(target=signins, args=(base, idp, tally, sessions, stop, args.signins / 2, 1)),
            threading.Thread(target=signins, args=(base, idp, tally, sessions, stop, args.signins / 2, 2)),
            threading.Thread(target=auth_checks, args=(base, tally, sessions, stop, args.auth, 3)),
            threading.Thread(target=scim_writes, args=(base, token, tally, stop, args.scim, 4)),
        ]
        for thread in threads:
            thread.daemon = True
            thread.start()
        workers = workers_of(server.pid)
        print(
            f"soak: {args.minutes:g} min, pserve {server.pid}, workers {workers}, database {args.database}, folder {folder}"
        )
        print(f"rates a second: {args.signins:g} sign-ins, {args.auth:g} /auth, {args.scim:g} SCIM writes")
        print(
            "minute  requests  errors  "
            + "  ".join(f"rss[{pid}] MB" for pid in workers)
            + "  sessions  audit_events  users"
        )
        started = time.monotonic()
        total_requests = total_errors = 0
        intervals = max(1, round(args.minutes * 60 / args.interval))
        for minute in range(1, intervals + 1):
            wait = started + minute * args.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if server.poll() is not None:
                raise SystemExit(f"pserve exited with {server.returncode}:\n{log.read_text()}")
            requests_, errors, _kinds = tally.take()
            total_requests += requests_
            total_errors += errors
            now_workers = workers_of(server.pid)
            memory = "  ".join(f"{rss_mb(pid) or 0:10.1f}" for pid in now_workers)
            sizes = table_sizes(engine)
            restarted = "" if now_workers == workers else f"  (workers now {now_workers})"
            print(
                f"{minute:6d}  {requests_:8d}  {errors:6d}  {memory}  {sizes['sessions']:8d}  "
                f"{sizes['audit_events']:12d}  {sizes['users']:5d}{restarted}",
                flush=True,
            )
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
        requests_, errors, _kinds = tally.take()
        print(f"total: {total_requests + requests_} requests, {total_errors + errors} errors")
        if args.tracemalloc:
            collected(folder, workers)
        tracebacks = log.read_text().count("Traceback")
        print(f"server log: {tracebacks} tracebacks ({log})")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
