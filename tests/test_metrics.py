"""``GET /metrics``: who may scrape, the names and labels of the contract, and what each one counts.

The counters live in this test process's multiprocess directory, shared by
every app a test builds, so each test compares a scrape after with one before.
"""

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from gateway import ConfigError
from gateway.db.models import SsoSession, utcnow
from gateway.metrics.collector import VERSION
from saml_support import sign_in
from scim_support import ScimClient, make_token

LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
STRANGER = {"REMOTE_ADDR": "203.0.113.9"}

#: Every family of DESIGN.md's Metrics section, with its type and labels.
CONTRACT = {
    "gateway_signins": ("counter", {"outcome", "reason"}),
    "gateway_signin_duration_seconds": ("histogram", set()),
    "gateway_scim_requests": ("counter", {"method", "resource", "status"}),
    "gateway_scim_request_duration_seconds": ("histogram", {"method", "resource"}),
    "gateway_forward_auth": ("counter", {"decision"}),
    "gateway_sessions_active": ("gauge", set()),
    "gateway_users": ("gauge", {"state"}),
    "gateway_idp_metadata_last_refresh_timestamp_seconds": ("gauge", set()),
    "gateway_idp_metadata_refresh_failures": ("counter", set()),
    "gateway_idp_certificate_not_after_timestamp_seconds": ("gauge", {"fingerprint"}),
    "gateway_scim_token_last_used_timestamp_seconds": ("gauge", {"token"}),
    "gateway_build_info": ("gauge", {"version"}),
}


def scrape(app, **kwargs) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    text = app.get("/metrics", extra_environ=kwargs.pop("extra_environ", LOCAL), **kwargs).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(app) -> dict:
    text = app.get("/metrics", extra_environ=LOCAL).text
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.fixture
def scim_app(make_app):
    return make_app(**{"gateway.plugins": "entra sqlstore"})


# ---------------------------------------------------------------- access


def test_loopback_may_scrape_in_the_prometheus_text_format(app):
    response = app.get("/metrics", extra_environ=LOCAL)
    assert response.content_type == "text/plain"
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    assert app.get("/metrics", extra_environ={"REMOTE_ADDR": "::1"}).status_int == 200


def test_another_address_is_refused_whatever_it_forwards(app):
    # X-Forwarded-For is never believed here, not even from a trusted proxy's address.
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}):
        response = app.get("/metrics", headers=headers, extra_environ=STRANGER, status=403)
        assert "gateway_" not in response.text


def test_metrics_allow_opens_networks_and_closes_loopback(make_app):
    app = make_app(**{"metrics.allow": "203.0.113.0/24 10.1.2.3"})
    assert app.get("/metrics", extra_environ=STRANGER).status_int == 200
    assert app.get("/metrics", extra_environ={"REMOTE_ADDR": "10.1.2.3"}).status_int == 200
    # An IPv4 client of a server listening on [::].
    assert app.get("/metrics", extra_environ={"REMOTE_ADDR": "::ffff:203.0.113.7"}).status_int == 200
    app.get("/metrics", extra_environ=LOCAL, status=403)


def test_metrics_token_is_required_when_set_and_may_come_from_the_environment(make_app, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "scrape-token-0123456789")
    app = make_app(**{"metrics.token": "${METRICS_TOKEN}"})
    assert app.get("/metrics", extra_environ=LOCAL, status=401).headers["WWW-Authenticate"].startswith("Bearer")
    app.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456788"}, extra_environ=LOCAL, status=401)
    app.get("/metrics", headers={"Authorization": "Basic scrape-token-0123456789"}, extra_environ=LOCAL, status=401)
    ok = app.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}, extra_environ=LOCAL)
    assert "gateway_build_info" in ok.text
    # The token is on top of the address rule, not instead of it.
    app.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}, extra_environ=STRANGER, status=403)


@pytest.mark.parametrize(
    "key, raw, message",
    [
        ("metrics.allow", "localhost", "metrics.allow: expected IP addresses or networks"),
        ("metrics.token", "short", "metrics.token: expected a random token of at least 16 characters"),
    ],
)
def test_a_bad_metrics_setting_stops_start_up_naming_it(make_app, key, raw, message):
    with pytest.raises(ConfigError) as error:
        make_app(**{key: raw})
    assert str(error.value).startswith(message)
    assert "short" not in str(error.value)  # a token is never echoed


# ---------------------------------------------------------------- names and values


def test_every_family_of_the_contract_with_its_type_and_labels(scim_app, idp):
    scim = ScimClient(scim_app, make_token(scim_app))
    scim.create_user("metrics@example.com")
    sign_in(scim_app, idp, "alice@example.com")
    scim_app.get("/auth", extra_environ=LOCAL)
    found = families(scim_app)
    for name, (kind, labels) in CONTRACT.items():
        assert name in found, name
        family = found[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    # No per-worker process_* or python_* families: in multiprocess mode they would describe one worker only.
    assert not [n for n in found if not n.startswith("gateway_")]
    assert value(scrape(scim_app), "gateway_build_info", version=VERSION) == 1


def test_forward_auth_counts_each_decision_on_the_fast_path_and_in_pyramid(make_app, database_url, idp):
    app = make_app(
        **{
            "sqlalchemy.url": database_url,
            "forward_auth.proxy": "nginx",
            "forward_auth.rules": "app.example.com /admin nobody-has-this-group\napp.example.com / *",
        }
    )
    before = scrape(app)
    app.get("/auth", headers={"X-Original-URL": "https://app.example.com/"}, extra_environ=LOCAL, status=401)
    sign_in(app, idp, "alice@example.com")
    for _ in range(3):  # allowed: answered before Pyramid, from the identity cache after the first
        app.get("/auth", headers={"X-Original-URL": "https://app.example.com/"}, extra_environ=LOCAL, status=200)
    app.get("/auth", headers={"X-Original-URL": "https://app.example.com/admin"}, extra_environ=LOCAL, status=403)
    after = scrape(app)
    for decision, count in (("allow", 3), ("deny", 1), ("unauthenticated", 1)):
        delta = value(after, "gateway_forward_auth_total", decision=decision) - value(
            before, "gateway_forward_auth_total", decision=decision
        )
        assert delta == count, decision


def test_scim_requests_by_method_resource_and_status(scim_app):
    scim = ScimClient(scim_app, make_token(scim_app))
    before = scrape(scim_app)
    user = scim.create_user("counted@example.com")
    scim.get(f"/Users/{user['id']}")
    scim.get("/Users/no-such-id", status=404)
    scim.get("/ServiceProviderConfig")
    scim_app.get("/scim/v2/Groups", status=401)  # no token: counted too
    after = scrape(scim_app)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_scim_requests_total", method="POST", resource="Users", status="201") == 1
    assert delta("gateway_scim_requests_total", method="GET", resource="Users", status="200") == 1
    assert delta("gateway_scim_requests_total", method="GET", resource="Users", status="404") == 1
    assert delta("gateway_scim_requests_total", method="GET", resource="discovery", status="200") == 1
    assert delta("gateway_scim_requests_total", method="GET", resource="Groups", status="401") == 1
    assert delta("gateway_scim_request_duration_seconds_count", method="GET", resource="Users") == 2
    assert delta("gateway_scim_request_duration_seconds_sum", method="POST", resource="Users") > 0
    # Ids and user names never become labels.
    assert not [key for key in after if any(user["id"] in v or "counted" in v for _, v in key[1])]


def test_signins_by_outcome_and_refusal_reason(saml_app, idp):
    before = scrape(saml_app)
    sign_in(saml_app, idp, "bob@example.com")
    saml_app.post("/saml/acs", {}, status=400)  # no SAMLResponse
    after = scrape(saml_app)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_signins_total", outcome="success", reason="") == 1
    assert delta("gateway_signins_total", outcome="refused", reason="missing_response") == 1
    assert delta("gateway_signin_duration_seconds_count") == 2
    # Refusals of other SAML endpoints are not sign-ins.
    saml_app.get("/saml/login", params={"next": "https://elsewhere.example.org/"}, status=400)
    assert value(scrape(saml_app), "gateway_signins_total", outcome="refused", reason="unsafe_next") == value(
        after, "gateway_signins_total", outcome="refused", reason="unsafe_next"
    )


def test_database_gauges_are_read_at_scrape_time(scim_app, idp):
    token = make_token(scim_app, "entra-metrics")
    scim = ScimClient(scim_app, token)
    user = scim.create_user("gone@example.com")
    scim.create_user("stays@example.com")
    scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    sign_in(scim_app, idp, "stays@example.com")
    samples = scrape(scim_app)
    assert value(samples, "gateway_users", state="inactive") == 1
    assert value(samples, "gateway_users", state="active") == 1
    assert value(samples, "gateway_sessions_active") == 1
    assert value(samples, "gateway_scim_token_last_used_timestamp_seconds", token="entra-metrics") > 1.7e9
    certificates = [
        v for (name, labels), v in samples.items() if name == "gateway_idp_certificate_not_after_timestamp_seconds"
    ]
    assert certificates and all(v > 1.7e9 for v in certificates)
    assert value(samples, "gateway_idp_metadata_last_refresh_timestamp_seconds") > 1.7e9
    # Read at scrape time: a session ended by another instance counts at once.
    with scim_app.app.registry.dbsession_factory() as session, session.begin():
        session.execute(sa.update(SsoSession).values(ended_at=utcnow()))
    assert value(scrape(scim_app), "gateway_sessions_active") == 0


def test_a_failed_metadata_load_is_counted(make_app, tmp_path):
    broken = tmp_path / "metadata.xml"
    broken.write_text("<not-metadata/>")
    app = make_app(**{"saml.idp_metadata": str(broken)})
    before = value(scrape(app), "gateway_idp_metadata_refresh_failures_total")
    app.app.registry.saml_sp.store.refresh_now()
    assert value(scrape(app), "gateway_idp_metadata_refresh_failures_total") == before + 1


# ---------------------------------------------------------------- dead workers (gateway/metrics/archive.py)


def _dead_worker(code: str) -> int:
    """A worker that counts in this process's metrics directory, then exits; its pid."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", f"import os\nfrom gateway.metrics import instruments as i\n{code}\nprint(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=dict(os.environ),
    )
    return int(result.stdout.split()[-1])


def _files_of(pid: int) -> list[str]:
    import os

    from gateway.metrics.directory import ensure

    return [name for name in os.listdir(ensure()) if name.endswith(f"_{pid}.db")]


def test_dead_workers_fold_into_the_archive_and_the_totals_stay(app):
    import os
    import time

    from gateway.metrics.directory import ensure

    before = scrape(app)
    stamp = float(int(time.time()) + 86400)  # later than any this process set: the max of all workers
    first = _dead_worker(
        f"i.FORWARD_AUTH_DENY.inc(7)\ni.SIGNIN_DURATION.observe(0.3)\ni.METADATA_REFRESHED.set({stamp})"
    )
    assert sorted(_files_of(first)) == [f"counter_{first}.db", f"gauge_max_{first}.db", f"histogram_{first}.db"]

    def delta(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    for _ in range(2):
        after = scrape(app)
        assert _files_of(first) == []  # folded by the first scrape
        assert delta(after, "gateway_forward_auth_total", decision="deny") == 7
        assert delta(after, "gateway_signin_duration_seconds_count") == 1
        assert delta(after, "gateway_signin_duration_seconds_bucket", le="0.5") == 1
        assert delta(after, "gateway_signin_duration_seconds_bucket", le="0.25") == 0
        assert value(after, "gateway_idp_metadata_last_refresh_timestamp_seconds") == stamp
    archive = {name for name in os.listdir(ensure()) if "_archive" in name}
    assert archive == {"counter_archive.db", "gauge_max_archive.db", "histogram_archive.db"}

    # A second dead worker adds to the archive; this process's own counts stay in its own files.
    second = _dead_worker("i.FORWARD_AUTH_DENY.inc(5)\ni.SIGNIN_DURATION.observe(0.3)")
    app.get("/auth", extra_environ=LOCAL, status=401)
    after = scrape(app)
    assert _files_of(second) == [] and _files_of(os.getpid())
    assert delta(after, "gateway_forward_auth_total", decision="deny") == 12
    assert delta(after, "gateway_forward_auth_total", decision="unauthenticated") == 1
    assert delta(after, "gateway_signin_duration_seconds_count") == 2
    assert delta(after, "gateway_signin_duration_seconds_sum") == pytest.approx(0.6)
