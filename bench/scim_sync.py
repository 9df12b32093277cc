#!/usr/bin/env python3
"""Entra's initial provisioning cycle against a live gateway, and against scim2-server.

    .venv/bin/python bench/scim_sync.py                 # N=10,000 users, 8 clients
    .venv/bin/python bench/scim_sync.py --users 2000    # a quicker run

For each target (the gateway on SQLite, the gateway on PostgreSQL, and the
reference in-memory ``scim2-server`` from PyPI under the same load) it runs
what Entra does on a first sync:

1. N users, each the Entra way: ``GET /Users?filter=userName eq "..."`` (must
   be an empty ListResponse), then ``POST /Users`` with core and enterprise
   attributes, shared among C concurrent clients;
2. groups of G members (one per G users): ``GET /Groups?excludedAttributes=members
   &filter=displayName eq "..."``, ``POST /Groups``, then ``PATCH`` adding 25
   members at a time;
3. every user read back and compared, every group's member list checked.

Step 1 runs in slices (``--slices``, default 20), the targets taking turns,
so that a slow stretch of this shared machine falls on all of them alike;
steps 2 and 3 then run for one target after the other, and the filter
latencies (whose top-ups write up to 100,000 rows) only after all of them.

It prints users/s, p50/p99 latency per operation, anything lost, the
latency of a ``userName eq`` filter with 10,000 and 100,000 users stored
(the gateway's stores are topped up with rows written straight into its
database; the reference is measured at N over HTTP), and the gateway's
throughput as a ratio to the reference's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


# ---------------------------------------------------------------- HTTP


class Client:
    """One persistent connection per thread, like a provisioning worker.

    A minimal HTTP/1.1 client on a plain socket (keep-alive when the server
    offers it, Content-Length, chunked or close-delimited bodies): the load
    generator shares the two vCPUs with the server under test, and
    ``http.client`` costs several times more per request (its header parsing
    goes through the ``email`` package). The same client drives every
    target, so this only takes client overhead out of every figure alike.
    """

    def __init__(self, base: str, token: str, timings):
        parts = urllib.parse.urlsplit(base)
        self.host, self.port, self.prefix = parts.hostname, parts.port, parts.path
        self.token = token
        self.timings = timings
        self.local = threading.local()
        self.fixed = (
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\nAccept: application/scim+json\r\n"
        )

    def conn(self):
        sock = getattr(self.local, "sock", None)
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.sock, self.local.buf = sock, b""
        return sock

    def close(self):
        sock = getattr(self.local, "sock", None)
        if sock is not None:
            sock.close()
        self.local.sock, self.local.buf = None, b""

    def _read_until(self, sock, marker: bytes) -> int:
        while (end := self.local.buf.find(marker)) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-response")
            self.local.buf += chunk
        return end

    def _take(self, sock, size: int) -> bytes:
        while len(self.local.buf) < size:
            chunk = sock.recv(max(65536, size - len(self.local.buf)))
            if not chunk:
                raise ConnectionError("connection closed mid-response")
            self.local.buf += chunk
        out, self.local.buf = self.local.buf[:size], self.local.buf[size:]
        return out

    def _response(self, sock, method: str):
        end = self._read_until(sock, b"\r\n\r\n")
        head = self.local.buf[:end].decode("latin-1").split("\r\n")
        self.local.buf = self.local.buf[end + 4 :]
        version, status = head[0].split(" ", 2)[:2]
        status = int(status)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        will_close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            body = self._take(sock, int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                end = self._read_until(sock, b"\r\n")
                size = int(self.local.buf[:end].split(b";")[0], 16)
                self.local.buf = self.local.buf[end + 2 :]
                if size == 0:  # then optional trailers and an empty line
                    while (end := self._read_until(sock, b"\r\n")) > 0:
                        self.local.buf = self.local.buf[end + 2 :]
                    self.local.buf = self.local.buf[2:]
                    break
                parts.append(self._take(sock, size))
                self._take(sock, 2)
            body = b"".join(parts)
        else:
            while chunk := sock.recv(65536):
                self.local.buf += chunk
            body, self.local.buf, will_close = self.local.buf, b"", True
        return status, body, will_close

    def call(self, op: str, method: str, path: str, body=None):
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self.fixed}"
        if body is not None:
            head += f"Content-Type: application/scim+json\r\nContent-Length: {len(data)}\r\n"
        message = (head + "\r\n").encode() + data
        for attempt in range(3):
            sock = self.conn()
            started = time.perf_counter()
            try:
                sock.sendall(message)
                status, raw, will_close = self._response(sock, method)
            except (ConnectionError, OSError, ValueError):
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if will_close:
                self.close()
            self.timings[op].append(elapsed)
            return status, (json.loads(raw) if raw else None)


def q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---------------------------------------------------------------- servers


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    from conftest import free_port as fp

    return fp()


def wait_http(url: str, process, log: Path, seconds: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not answer at {url}")


def wait_started(url: str, process, log: Path) -> None:
    """wait_http, stopping the server when it never answers: a target that
    failed to start is not yet in the list the run stops at its end."""
    try:
        wait_http(url, process, log)
    except BaseException:
        stop_process(process)
        raise


class Gateway:
    def __init__(
        self, name: str, database_url: str, workdir: Path, workers: str, threads: int, server: str = "granian"
    ):
        from scim_support import run_cli, write_ini

        self.name = name
        self.database_url = database_url
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.ini = write_ini(workdir / "bench.ini", database_url, self.port, **{"scim.max_page_size": "1000"})
        text = self.ini.read_text()
        if server == "waitress":  # one process; waitress's own threads
            text = text.replace("use = egg:entra-identity-gateway#granian", "use = egg:waitress#main").replace(
                f"listen = 127.0.0.1:{self.port}\n", f"listen = 127.0.0.1:{self.port}\nthreads = {threads}\n"
            )
        else:
            text = text.replace(
                f"listen = 127.0.0.1:{self.port}\n",
                f"listen = 127.0.0.1:{self.port}\nworkers = {workers}\nthreads = {threads}\n",
            )
        self.ini.write_text(text)
        run_cli(self.ini, "migrate")
        out = run_cli(self.ini, "token", "create", "bench").stdout
        self.token = out.strip().splitlines()[-1]
        self.log = workdir / "pserve.log"
        self.process = subprocess.Popen(
            [str(BIN / "pserve"), str(self.ini)], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=workdir
        )
        self.base = f"http://127.0.0.1:{self.port}/scim/v2"
        wait_started(f"http://127.0.0.1:{self.port}/healthz", self.process, self.log)

    def stored_users(self) -> int:
        import sqlalchemy as sa

        from gateway.db import create_engine
        from gateway.db.models import User

        engine = create_engine(self.database_url)
        with engine.connect() as connection:
            count = connection.scalar(sa.select(sa.func.count()).select_from(User))
        engine.dispose()
        return count

    def top_up(self, target: int) -> list[str]:
        """Write users straight into the database until ``target`` are stored."""
        import sqlalchemy as sa

        from gateway.db import create_engine
        from gateway.db.models import User, new_id, utcnow
        from gateway_sqlstore.store import user_columns

        have = self.stored_users()
        engine = create_engine(self.database_url)
        names = []
        now = utcnow()
        run = uuid.uuid4().hex[:6]
        for start in range(have, target, 5000):
            rows = []
            for i in range(start, min(target, start + 5000)):
                data = entra_user(f"filler{run}-{i}@bench.contoso.com", i)
                names.append(data["userName"])
                rows.append(
                    {
                        **user_columns(data),
                        "id": new_id(),
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                        "provisioned_by": "scim",
                        "is_admin": False,
                        "attributes": {},
                    }
                )
            with engine.begin() as connection:
                connection.execute(sa.insert(User), rows)
        engine.dispose()
        return names

    def stop(self):
        stop_process(self.process)


class Reference:
    name = "scim2-server (reference, in memory)"

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.token = "bench-" + uuid.uuid4().hex
        self.log = workdir / "scim2-server.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(BIN / "scim2-server"), "--port", str(self.port), "--bearer-token", self.token],
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}/v2"
        wait_started(f"{self.base}/ServiceProviderConfig", self.process, self.log)

    def stop(self):
        stop_process(self.process)


# ---------------------------------------------------------------- the load


def entra_user(user_name: str, i: int) -> dict:
    """A user the way Entra's default mappings POST one (core + enterprise)."""
    given, family = f"Given{i}", f"Family{i}"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": str(uuid.uuid5(uuid.NAMESPACE_URL, user_name)),
        "userName": user_name,
        "active": True,
        "displayName": f"{given} {family}",
        "title": "Engineer",
        "preferredLanguage": "en-US",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "phoneNumbers": [{"type": "work", "value": f"+1 425 555 {i % 10000:04d}"}],
        "addresses": [
            {
                "type": "work",
                "streetAddress": "1 Microsoft Way",
                "locality": "Redmond",
                "postalCode": "98052",
                "country": "US",
            }
        ],
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "meta": {"resourceType": "User"},
        ENTERPRISE: {
            "employeeNumber": str(100000 + i),
            "department": f"Dept {i % 50}",
            "costCenter": f"CC{i % 20}",
            "organization": "Contoso",
            "division": "Cloud",
        },
    }


class Sync:
    """Entra's initial cycle against one target, in steps the caller can interleave.

    The user phase is run in slices by :func:`main`, one target after the
    other (reference, SQLite, PostgreSQL, reference, ...): these machines are
    shared, and their speed drifts by a fifth within minutes, so a target
    measured in one slow stretch would get a ratio it did not earn. Each
    target's users/s is its users over the sum of its own slices. Every slice
    opens fresh connections (a new pool of client threads), so the random
    spread of keep-alive connections over worker processes is redrawn too.
    """

    def __init__(self, target, users: int, clients: int, group_size: int, patch_size: int):
        self.target = target
        self.clients, self.group_size, self.patch_size = clients, group_size, patch_size
        self.timings = defaultdict(list)
        self.client = Client(target.base, target.token, self.timings)
        run = uuid.uuid4().hex[:8]
        self.names = [f"user{i}-{run}@contoso.com" for i in range(users)]
        self.run = run
        self.ids: dict[str, str] = {}
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.users_elapsed = 0.0
        self.groups_elapsed = 0.0

    def provision(self, i: int) -> None:
        name = self.names[i]
        status, body = self.client.call("GET filter userName", "GET", "/Users?filter=" + q('userName eq "%s"' % name))
        if status != 200 or body.get("totalResults") != 0:
            self.problems.append(f"lookup {name}: {status}")
            return
        status, body = self.client.call("POST /Users", "POST", "/Users", entra_user(name, i))
        if status != 201:
            self.problems.append(f"create {name}: {status} {body}")
            return
        with self.lock:
            self.ids[name] = body["id"]

    def users_slice(self, indexes: range) -> None:
        """Provision these users with ``clients`` concurrent connections; time it."""
        started = time.perf_counter()
        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(self.provision, indexes))
        self.users_elapsed += time.perf_counter() - started

    def groups(self) -> None:
        """Groups: created first (lookup, POST), then filled 25 members per PATCH."""
        client, run = self.client, self.run
        groups = {}
        group_count = max(1, len(self.names) // self.group_size)

        def create_group(g):
            name = f"Group {g} {run}"
            client.call(
                "GET filter displayName",
                "GET",
                "/Groups?excludedAttributes=members&filter=" + q('displayName eq "%s"' % name),
            )
            status, body = client.call(
                "POST /Groups",
                "POST",
                "/Groups",
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "externalId": str(uuid.uuid4()),
                },
            )
            if status != 201:
                self.problems.append(f"group {name}: {status} {body}")
                return
            with self.lock:
                groups[g] = body["id"]

        member_ids = [self.ids[n] for n in self.names if n in self.ids]
        started = time.perf_counter()
        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(create_group, range(group_count)))
        patches = []
        for g, gid in groups.items():
            chunk_members = member_ids[g * self.group_size : (g + 1) * self.group_size]
            for start in range(0, len(chunk_members), self.patch_size):
                patches.append((gid, chunk_members[start : start + self.patch_size]))
        random.Random(1).shuffle(patches)  # groups fill in parallel, as Entra's workers do

        def patch(item):
            gid, members = item
            status, body = client.call(
                "PATCH /Groups +25",
                "PATCH",
                f"/Groups/{gid}",
                {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Add", "path": "members", "value": [{"value": m} for m in members]}],
                },
            )
            if status not in (200, 204):
                self.problems.append(f"patch {gid}: {status} {body}")

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(patch, patches))
        self.groups_elapsed = time.perf_counter() - started
        self.group_ids, self.member_ids = groups, member_ids

    def verify(self) -> None:
        """Every user as sent, every group with exactly its members."""
        client, ids = self.client, self.ids

        def verify_user(i):
            name = self.names[i]
            if name not in ids:
                return
            status, body = client.call("GET /Users/{id}", "GET", f"/Users/{ids[name]}")
            sent = entra_user(name, i)
            if (
                status != 200
                or any(body.get(k) != sent[k] for k in ("userName", "emails", "name", "externalId"))
                or (body.get(ENTERPRISE, {}).get("employeeNumber") != sent[ENTERPRISE]["employeeNumber"])
            ):
                self.problems.append(f"verify {name}: {status}")

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(verify_user, range(len(self.names))))
        for g, gid in self.group_ids.items():
            status, body = client.call("GET /Groups/{id}", "GET", f"/Groups/{gid}")
            expected = set(self.member_ids[g * self.group_size : (g + 1) * self.group_size])
            got = {m["value"] for m in (body or {}).get("members", [])}
            if got != expected:
                self.problems.append(f"group {gid}: {len(got)} members, expected {len(expected)}")

    def result(self) -> dict:
        users = len(self.names)
        return {
            "users_per_s": len(self.ids) / self.users_elapsed if self.users_elapsed else 0.0,
            "users_elapsed": self.users_elapsed,
            "groups_elapsed": self.groups_elapsed,
            "created": len(self.ids),
            "lost": users - len(self.ids) + sum(1 for p in self.problems if not p.startswith(("lookup", "create"))),
            "problems": self.problems,
            "timings": self.timings,
            "names": [n for n in self.names if n in self.ids],
            "client": self.client,
        }


def filter_latency(client: Client, names: list[str], samples: int) -> tuple[float, float]:
    """p50/p99 of single-client userName lookups (hits and misses)."""
    key = f"filter-{uuid.uuid4().hex}"
    rng = random.Random(7)
    for _ in range(10):  # warm up the connection
        client.call("warmup", "GET", "/Users?filter=" + q('userName eq "nobody@nowhere"'))
    for i in range(samples):
        name = rng.choice(names) if i % 4 else f"missing-{i}@contoso.com"
        status, body = client.call(key, "GET", "/Users?filter=" + q('userName eq "%s"' % name.upper()))
        assert status == 200 and body["totalResults"] == (0 if name.startswith("missing-") else 1), (status, body)
    values = client.timings.pop(key)
    return percentile(values, 50), percentile(values, 99)


def report(name: str, result: dict, users: int) -> None:
    print(f"\n== {name}")
    print(
        f"   users: {result['created']}/{users} provisioned in {result['users_elapsed']:.1f} s"
        f" = {result['users_per_s']:.0f} users/s; groups built in {result['groups_elapsed']:.1f} s;"
        f" lost or wrong: {result['lost']}"
    )
    print(f"   {'operation':<26}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for op, values in result["timings"].items():
        if op == "warmup":
            continue
        print(
            f"   {op:<26}{len(values):>8}{percentile(values, 50) * 1000:>10.1f}{percentile(values, 99) * 1000:>10.1f}"
        )
    for problem in result["problems"][:5]:
        print(f"   problem: {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="users to provision (default 10000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--group-size", type=int, default=1000, help="members per group (default 1000)")
    parser.add_argument("--patch-size", type=int, default=25, help="members per PATCH (default 25)")
    parser.add_argument("--stored", default="10000,100000", help="stored-user counts for filter latency")
    parser.add_argument("--samples", type=int, default=400, help="filter lookups per latency point")
    parser.add_argument("--databases", default="sqlite,postgresql", help="gateway databases to run on")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-reference", action="store_true", help="skip scim2-server")
    parser.add_argument(
        "--workers",
        default="auto",
        help="gateway worker processes (default auto: one per CPU and at least two, as in production.ini); a comma list runs one gateway per setting",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="Python threads per gateway worker (default 1, as in production.ini)"
    )
    parser.add_argument(
        "--server",
        default="granian",
        choices=["granian", "waitress"],
        help="pserve's server for the gateway (default granian, as shipped; waitress: one process, --threads threads)",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=20,
        help="the user phase runs in this many slices, targets taking turns (default 20)",
    )
    args = parser.parse_args()
    stored_levels = [int(s) for s in args.stored.split(",") if s]
    worker_settings = [w.strip() for w in args.workers.split(",") if w.strip()]

    server = (
        f"Granian, {args.workers} workers of {args.threads} threads"
        if args.server == "granian"
        else f"waitress, {args.threads} threads"
    )
    print(
        f"Entra initial cycle: {args.users} users, {args.clients} clients, groups of {args.group_size} "
        f"filled {args.patch_size} members per PATCH; gateway on {server};"
        f" python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    targets, schemas, syncs, results = [], [], {}, {}
    admin = None
    try:
        # Every server is up before the first slice, and idle outside its own slices.
        if not args.no_reference:
            targets.append(("reference", Reference(workdir / "reference")))
        for database in [d for d in args.databases.split(",") if d]:
            for workers in worker_settings:
                key = database if len(worker_settings) == 1 else f"{database}, {workers} workers"
                folder = workdir / key.replace(", ", "-").replace(" ", "")
                if database == "sqlite":
                    url = f"sqlite:///{folder / 'gateway.sqlite'}"
                else:
                    import sqlalchemy as sa

                    schema = f"scim_bench_{uuid.uuid4().hex[:8]}"
                    admin = admin or sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
                    with admin.connect() as connection:
                        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                    schemas.append(schema)
                    sep = "&" if "?" in args.postgres_url else "?"
                    url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
                targets.append((key, Gateway(f"gateway on {key}", url, folder, workers, args.threads, args.server)))
        for key, target in targets:
            syncs[key] = Sync(target, args.users, args.clients, args.group_size, args.patch_size)
        slices = max(1, min(args.slices, args.users))
        bounds = [round(args.users * k / slices) for k in range(slices + 1)]
        for k in range(slices):
            for key, _ in targets:
                syncs[key].users_slice(range(bounds[k], bounds[k + 1]))

        # Every target's groups and verification first, then the filter
        # latencies: their top-ups write up to 100,000 rows, and the work that
        # leaves behind (SQLite's checkpoints, PostgreSQL's autovacuum) must
        # not fall on the next target's groups.
        for key, _ in targets:
            sync = syncs[key]
            sync.groups()
            sync.verify()
            results[key] = sync.result()
        for key, target in targets:
            result = results[key]
            report(target.name, result, args.users)
            if key == "reference":
                p50, p99 = filter_latency(result["client"], result["names"], args.samples)
                print(
                    f"   filter userName eq at {result['created']} stored: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
                )
                continue
            for level in stored_levels:
                names = result["names"] + target.top_up(level)
                p50, p99 = filter_latency(result["client"], names[: max(len(result["names"]), 1000)], args.samples)
                print(
                    f"   filter userName eq at {target.stored_users():>7} stored: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
                )
        if "reference" in results:
            print(f"\nuser phase in {slices} slices, the targets taking turns")
            reference = results["reference"]["users_per_s"]
            for key, result in results.items():
                if key != "reference":
                    ratio = result["users_per_s"] / reference
                    print(
                        f"throughput ratio, gateway on {key} / scim2-server: {ratio:.1f}x"
                        f" ({result['users_per_s']:.0f} vs {reference:.0f} users/s)"
                    )
    finally:
        for _, target in targets:
            target.stop()
        if admin is not None:
            with admin.connect() as connection:
                for schema in schemas:
                    connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r["lost"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
