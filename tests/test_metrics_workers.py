"""``/metrics`` of ``pserve`` with two Granian workers on PostgreSQL: one scrape adds both workers up.

Every request below goes on a new connection, and the kernel spreads new
connections over the workers' sockets, so both workers serve; the test
checks that both wrote metric files before it trusts a total.
"""

import html
import os
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from saml_support import authn_request_id
from scim_support import http
from test_serve import _alive, _children

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _send(url: str, data: dict | None = None, cookies: dict | None = None):
    """(status, headers, body) of one request on a new connection."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data is not None else None)
    if cookies:
        request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def _cookies(headers) -> dict:
    found = {}
    for line in headers.get_all("Set-Cookie") or ():
        name, _, rest = line.partition("=")
        found[name.strip()] = rest.split(";", 1)[0]
    return found


def _sign_in(base: str, email: str) -> dict:
    """A development-IdP sign-in over HTTP; the browser's cookies after it."""
    status, headers, _ = _send(f"{base}/saml/login")
    assert status == 303, status
    cookies = _cookies(headers)
    request_id = authn_request_id(headers["Location"])
    status, _, page = _send(f"{base}/devidp/signin", {"email": email, "request_id": request_id}, cookies)
    assert status == 200, page
    saml_response = html.unescape(re.search(r'name="SAMLResponse" value="([^"]+)"', page).group(1))
    status, headers, body = _send(f"{base}/saml/acs", {"SAMLResponse": saml_response}, cookies)
    assert status == 303, body
    return {**cookies, **_cookies(headers)}


def _scrape(base: str) -> dict:
    status, _, text = _send(f"{base}/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _counters(samples: dict) -> dict:
    """What the clients sent, as the scrape counts it."""

    def get(name, **labels):
        return samples.get((name, frozenset(labels.items())), 0.0)

    return {
        "allow": get("gateway_forward_auth_total", decision="allow"),
        "scim_creates": get("gateway_scim_requests_total", method="POST", resource="Users", status="201"),
        "scim_seconds": get("gateway_scim_request_duration_seconds_count", method="POST", resource="Users"),
        "signins": get("gateway_signins_total", outcome="success", reason=""),
        "signin_seconds": get("gateway_signin_duration_seconds_count"),
        "users": get("gateway_users", state="active"),
        "sessions": get("gateway_sessions_active"),
    }


def _worker_files(directory) -> set[int]:
    """The pids of the processes with a counter file (not the archive of dead ones)."""
    pids = {name[len("counter_") : -len(".db")] for name in os.listdir(directory) if name.startswith("counter_")}
    return {int(pid) for pid in pids if pid.isdigit()}


def test_one_scrape_adds_up_both_workers_and_survives_a_killed_one(live_gateway, postgres_url, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")  # wiped at start
    gateway = live_gateway(postgres_url, server={"workers": 2}, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    base = gateway.url
    workers = _children(gateway.process.pid)
    assert len(workers) == 2
    token = gateway.token()

    sessions = [_sign_in(base, f"person{i}@example.com") for i in range(5)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda i: http("POST", f"{gateway.scim_url}/Users", token, {"userName": f"w{i}@contoso.com"})[0],
                range(20),
            )
        )
        assert statuses == [201] * 20
        statuses = list(pool.map(lambda i: _send(f"{base}/auth", cookies=sessions[i % 5])[0], range(40)))
        assert statuses == [200] * 40
    # Both workers counted something, each in its own file.
    assert _worker_files(metrics_dir) == workers, "the requests did not reach both workers"

    expected = {
        "allow": 40,
        "scim_creates": 20,
        "scim_seconds": 20,
        "signins": 5,
        "signin_seconds": 5,
        "users": 25,
        "sessions": 5,
    }
    for _ in range(3):
        assert _counters(_scrape(base)) == expected

    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        current = _children(gateway.process.pid)
        if len(current) == 2 and victim not in current and _alive(victim) is False:
            break
        assert time.monotonic() < deadline, "Granian did not replace the killed worker"
        time.sleep(0.1)
    # Every scrape, whichever worker answers it, still has the killed worker's counts.
    deadline = time.monotonic() + 30
    seen = 0
    while seen < 6:
        status, _, _ = _send(f"{base}/healthz")
        if status == 200:
            assert _counters(_scrape(base)) == expected
            seen += 1
        assert time.monotonic() < deadline
    # Its files were folded into the archive (gateway/metrics/archive.py): scrapes read no more files.
    assert victim not in _worker_files(metrics_dir)
    assert (metrics_dir / "counter_archive.db").exists()
    # The replacement counts on top.
    assert _send(f"{base}/auth", cookies=sessions[0])[0] == 200
    assert _counters(_scrape(base))["allow"] == 41
