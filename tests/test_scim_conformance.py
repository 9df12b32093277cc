"""scim2-tester, the python-scim conformance checker, against a live pserve.

Every check must pass with the default settings (the checker's replace
tests change userName, which ``scim.allow_username_change`` accepts by
default), plus a custom extension configured so that discovery and PATCH of
extensions are checked.
"""

from __future__ import annotations

import pytest

pytest.importorskip("scim2_tester")
pytest.importorskip("httpx2")

pytestmark = pytest.mark.slow


def test_scim2_tester_passes_every_check(live_gateway, sqlite_url):
    from httpx2 import Client
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    server = live_gateway(
        sqlite_url,
        **{
            "scim.custom_schemas": "urn:ietf:params:scim:schemas:extension:acme:2.0:User",
        },
    )
    token = server.token("conformance")
    with Client(base_url=server.scim_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        results = check_server(SyncSCIMClient(http))
    failures = [
        f"{r.status.name} {r.title} ({getattr(r, 'resource_type', None)}): {r.reason}"
        for r in results
        if r.status is not Status.SUCCESS
    ]
    assert len(results) > 100
    assert failures == []
