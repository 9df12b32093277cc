"""The admin console's user list and search at 100,000 users on PostgreSQL.

Fills a fresh schema with ``--users`` users (default 100,000; names like
``maria.garcia123@example.com``, some inactive, a fifth created at first
sign-in), signs an admin in, and times whole ``GET /admin/users`` requests
in-process (routing, the query, the template), each case ``--repeat`` times:
the first page, a page deep in the list, prefix searches of one, two and
more letters on the userName, email and display name, exact external id and
IdP subject look-ups, and the state and source filters. For each case it
prints the median and 95th percentile, the ratio to the same case at
``--small`` users (1.0 means the page costs the same at any size) and
whether PostgreSQL's plan scans the users table (``Seq Scan on users``).
Target: every median under 50 ms, and no scan.

    .venv/bin/python bench/admin_users.py [--users 100000] [--small 1000] [--repeat 30]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent.parent))

from gateway.admin.search import search_users  # noqa: E402
from gateway.db import create_engine, migrate  # noqa: E402
from gateway.db.models import SsoSession, User  # noqa: E402
from gateway.sessions import hash_token  # noqa: E402

SECRET = "bench-secret-bench-secret-bench-secret-0123456789"
FIRST = (
    "maria jose ana juan luis carlos laura david sara pablo elena jorge marta daniel paula javier lucia miguel "
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert sybil trent victor "
    "walter yusuf zoe akira mei wei chen li hana yuki sven ingrid lars astrid olga ivan dmitri nadia omar fatima"
).split()
LAST = (
    "garcia martinez lopez sanchez perez gomez martin jimenez ruiz hernandez diaz moreno alvarez romero "
    "smith johnson williams brown jones miller davis wilson anderson taylor thomas moore jackson white harris "
    "clark lewis walker hall allen young king wright scott green baker adams nelson hill campbell mitchell "
    "tanaka suzuki sato kim lee park nguyen tran muller schmidt schneider fischer weber meyer wagner becker"
).split()

#: (label, query string); {ext} and {sub} are an existing user's external id and IdP subject.
CASES = (
    ("first page", ""),
    ("a page deep in the list", "after={deep}"),
    ("userName prefix, 1 letter", "q=m"),
    ("userName prefix, 2 letters", "q=ma"),
    ("userName prefix, a whole name", "q=maria.garcia"),
    ("email prefix", "q=walter.k"),
    ("display name prefix", "q=Olga Mi"),
    ("no match", "q=zzzz-nobody"),
    ("exact external id", "q={ext}"),
    ("exact IdP subject", "q={sub}"),
    ("inactive only", "state=inactive"),
    ("created at first sign-in, prefix", "q=li&source=saml"),
)


def populate(engine, count: int) -> dict:
    now = dt.datetime.now(dt.UTC)
    rows, known = [], {}
    for i in range(count):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        name = f"{first}.{last}{i}@example.com"
        ext, sub = str(uuid.uuid4()), str(uuid.uuid4())
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "user_name": name,
                "user_name_key": name,
                "external_id": ext,
                "idp_subject": sub,
                "active": i % 50 != 0,
                "display_name": f"{first.title()} {last.title()}",
                "given_name": first.title(),
                "family_name": last.title(),
                "email": name,
                "email_key": name,
                "scim_data": {"userName": name},
                "attributes": {},
                "provisioned_by": "saml" if i % 5 == 0 else "scim",
                "is_admin": False,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
        if i == count // 2:
            known = {"ext": ext, "sub": sub, "deep": name}
    with engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sa.insert(User), rows[start : start + 5000])
    # What autovacuum does soon after a bulk load: statistics, and the visibility
    # map that lets the search read the covering indexes alone.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE users")
    return known


def signed_in_admin(engine) -> str:
    """A live session of an admin, made directly: the cookie value."""
    now = dt.datetime.now(dt.UTC)
    token = secrets.token_urlsafe(32)
    with engine.begin() as connection:
        user_id = str(uuid.uuid4())
        connection.execute(
            sa.insert(User),
            [
                {
                    "id": user_id,
                    "user_name": "bench-admin",
                    "user_name_key": "bench-admin",
                    "active": True,
                    "scim_data": {},
                    "attributes": {},
                    "provisioned_by": "saml",
                    "is_admin": True,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        connection.execute(
            sa.insert(SsoSession),
            [
                {
                    "id_hash": hash_token(SECRET, token),
                    "user_id": user_id,
                    "created_at": now,
                    "last_seen_at": now,
                    "expires_at": now + dt.timedelta(hours=8),
                    "csrf_token": secrets.token_urlsafe(32),
                }
            ],
        )
    return token


def scans_users(engine, query: str, known: dict) -> bool:
    """Whether PostgreSQL's plan for this case reads the whole users table."""
    from urllib.parse import parse_qs

    params = {k: v[0] for k, v in parse_qs(query).items()}
    captured = []

    class Capture:
        def __init__(self, connection):
            self.connection = connection

        def execute(self, statement):
            captured.append(statement)
            return self.connection.execute(statement)

        def get_bind(self):
            return engine

    with engine.connect() as connection:
        search_users(
            Capture(connection),
            params.get("q", ""),
            state=params.get("state", ""),
            source=params.get("source", ""),
            after=params.get("after"),
        )
        compiled = captured[0].compile(engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}"))
    return "Seq Scan on users" in plan


def measure(url: str, count: int, repeat: int) -> dict:
    import webtest

    from gateway import main

    schema = f"bench_admin_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    schema_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    engine = create_engine(schema_url)
    try:
        migrate.upgrade(engine)
        known = populate(engine, count)
        cookie = signed_in_admin(engine)
        app = main(
            {},
            **{
                "gateway.base_url": "http://127.0.0.1",
                "gateway.plugins": "entra devidp sqlstore",
                "saml.idp_profile": "devidp",
                "sqlalchemy.url": schema_url,
                "session.secret": SECRET,
                "session.cookie_secure": "false",
            },
        )
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "127.0.0.1"})
        client.set_cookie("gateway_session", cookie)
        results = {}
        for label, query in CASES:
            query = query.format(**known)
            path = "/admin/users" + ("?" + query if query else "")
            client.get(path, status=200)  # warm: plans, templates
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                client.get(path, status=200)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            results[label] = {
                "median": statistics.median(times),
                "p95": times[min(len(times) - 1, int(len(times) * 0.95))],
                "scan": scans_users(engine, query, known),
            }
        from gateway.serve import close

        close(app)
        return results
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    # The development IdP (metadata without a tenant) keeps its key in ./var: a temporary folder.
    os.chdir(tempfile.mkdtemp(prefix="bench-admin-"))
    small = measure(args.postgres, args.small, args.repeat)
    large = measure(args.postgres, args.users, args.repeat)
    print(f"GET /admin/users on PostgreSQL, in-process (routing, query, template), {args.repeat} requests a case")
    print(f"{'case':<34} {'median ms':>9} {'p95 ms':>7} {'at ' + format(args.small, ','):>9} {'ratio':>6}  plan")
    worst = 0.0
    for label, _ in CASES:
        big, little = large[label], small[label]
        worst = max(worst, big["median"])
        print(
            f"{label:<34} {big['median']:>9.1f} {big['p95']:>7.1f} {little['median']:>9.1f} {big['median'] / little['median']:>6.2f}"
            f"  {'SEQ SCAN of users' if big['scan'] else 'indexed'}"
        )
    scans = [label for label, _ in CASES if large[label]["scan"]]
    print(
        f"\n{args.users:,} users: slowest median {worst:.1f} ms (target < 50 ms); "
        f"{'no case scans the table' if not scans else 'SCANS: ' + ', '.join(scans)}"
    )
    return 0 if worst < 50 and not scans else 1


if __name__ == "__main__":
    sys.exit(main())
