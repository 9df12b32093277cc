"""Races on PostgreSQL against a live pserve (Granian, several threads and connections).

These prove what the unit tests cannot: that uniqueness rests on the unique
index (not a read-then-write race), that concurrent membership PATCHes of one
group all land, and that a failed request leaves nothing behind.
"""

from __future__ import annotations

import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from scim_support import PATCH_OP, http

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def server(live_gateway, postgres_url):
    gateway = live_gateway(postgres_url)
    return gateway, gateway.token("race")


def race(calls):
    """Run the calls at once: each thread waits at a barrier, then fires."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_ten_concurrent_posts_of_one_user_name_make_one_user(server):
    gateway, token = server
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "race@contoso.com"}
    results = race(
        [
            lambda i=i: http(
                "POST",
                f"{gateway.scim_url}/Users",
                token,
                {**body, "userName": ["race@contoso.com", "RACE@contoso.com"][i % 2]},
            )
            for i in range(10)
        ]
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 9, results
    assert all(b["scimType"] == "uniqueness" for s, b in results if s == 409)
    query = urllib.parse.quote('userName eq "race@contoso.com"')  # percent-encoded, as Entra sends it
    status, page = http("GET", f"{gateway.scim_url}/Users?filter={query}", token)
    assert page["totalResults"] == 1


def test_concurrent_member_patches_lose_nothing(server):
    gateway, token = server
    users = []
    for i in range(30):
        status, user = http("POST", f"{gateway.scim_url}/Users", token, {"userName": f"m{i}@contoso.com"})
        assert status == 201
        users.append(user["id"])
    status, group = http("POST", f"{gateway.scim_url}/Groups", token, {"displayName": "Racers"})
    gid = group["id"]

    def add(chunk):
        ops = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": u} for u in chunk]}],
        }
        return http("PATCH", f"{gateway.scim_url}/Groups/{gid}", token, ops)

    results = race([lambda c=users[i : i + 3]: add(c) for i in range(0, 30, 3)])
    assert [s for s, _ in results] == [204] * 10
    status, got = http("GET", f"{gateway.scim_url}/Groups/{gid}", token)
    assert sorted(m["value"] for m in got["members"]) == sorted(users)
    assert got["meta"]["version"] == 'W/"11"'


def test_a_failed_request_leaves_no_partial_write(server):
    gateway, token = server
    status, user = http("POST", f"{gateway.scim_url}/Users", token, {"userName": "partial@contoso.com"})
    status, group = http("POST", f"{gateway.scim_url}/Groups", token, {"displayName": "Half"})
    ops = {
        "schemas": [PATCH_OP],
        "Operations": [
            {"op": "Add", "path": "members", "value": [{"value": user["id"]}]},
            {"op": "Replace", "path": "displayName", "value": "Renamed"},
            {"op": "Add", "path": "members", "value": [{"value": "00000000-0000-0000-0000-000000000000"}]},
        ],
    }
    status, body = http("PATCH", f"{gateway.scim_url}/Groups/{group['id']}", token, ops)
    assert status == 400 and body["scimType"] == "invalidValue"
    status, got = http("GET", f"{gateway.scim_url}/Groups/{group['id']}", token)
    assert got["displayName"] == "Half" and got["members"] == [] and got["meta"]["version"] == 'W/"1"'
