"""The access log (gateway/accesslog.py): one line per request when ``logging.access`` is on.

Through WebTest with the log captured, with the JSON formatter of
docs/operations.md, and from a running ``pserve`` whose stderr is read.
"""

import json
import logging

import pytest

from gateway.accesslog import AccessLog
from gateway.forward_auth import FastPath
from gateway.testing.ini import logging_sections
from saml_support import sign_in
from test_logs import json_log  # noqa: F401 - the fixture
from test_metrics_workers import _send, _sign_in

ON = {"logging.access": "true"}
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
FIELDS = {"method", "route", "status", "duration_ms", "correlation_id"}


@pytest.fixture
def access(caplog):
    """The access-log records written so far."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    return lambda: [r for r in caplog.records if r.name == "gateway.access"]


def test_one_line_per_request_with_method_route_status_duration_and_the_id_returned(make_app, access):
    app = make_app(**ON)
    responses = [
        app.get("/healthz"),
        app.post("/saml/acs", {}, status=400),
        app.get("/no/such/page", status=404),
        app.get("/auth", extra_environ=LOCAL, status=401),
    ]
    records = access()
    assert len(records) == len(responses)
    expected = [
        ("GET", "health.live", 200),
        ("POST", "saml.acs", 400),
        ("GET", None, 404),
        ("GET", "forward_auth.check", 401),
    ]
    for record, response, (method, route, status) in zip(records, responses, expected, strict=True):
        assert (record.method, record.route, record.status) == (method, route, status)
        assert record.levelname == "INFO"
        assert isinstance(record.duration_ms, float) and record.duration_ms > 0
        # Every response carries its id now, and the line names the same one.
        assert record.correlation_id == response.headers["X-Request-Id"]
        assert f"{method} {route or '-'} {status} " in record.getMessage()
        assert record.correlation_id in record.getMessage()
    assert len({r.correlation_id for r in records}) == len(records)


def test_a_client_s_request_id_is_kept_and_a_malformed_one_replaced(make_app, access):
    app = make_app(**ON)
    kept = app.get("/healthz", headers={"X-Request-Id": "lb-7f3a9c21-0001"})
    assert kept.headers["X-Request-Id"] == "lb-7f3a9c21-0001"
    replaced = app.get("/healthz", headers={"X-Request-Id": "no spaces\nor newlines please"})
    assert replaced.headers["X-Request-Id"] != "no spaces\nor newlines please"
    assert [r.correlation_id for r in access()] == ["lb-7f3a9c21-0001", replaced.headers["X-Request-Id"]]


def test_the_id_is_the_one_every_layer_below_uses(make_app, access):
    # A refusal page shows the request's reference; the guard's 400 answers before Pyramid.
    app = make_app(**ON)
    refused = app.get("/saml/login", params={"next": "https://elsewhere.example.org/"}, status=400)
    assert refused.headers["X-Request-Id"] in refused.text
    unreadable = app.get("/healthz?name=%ff", status=400)
    assert unreadable.headers["X-Request-Id"] in unreadable.text
    records = access()
    assert [r.correlation_id for r in records] == [refused.headers["X-Request-Id"], unreadable.headers["X-Request-Id"]]
    assert [(r.route, r.status) for r in records] == [("saml.login", 400), (None, 400)]


def test_forward_auth_checks_are_logged_on_the_fast_path_too(make_app, database_url, idp, access):
    app = make_app(**ON, **{"sqlalchemy.url": database_url})
    assert isinstance(app.app, AccessLog) and isinstance(app.app.app, FastPath)
    sign_in(app, idp, "alice@example.com")
    app.app.registry.identity_cache.clear()  # the first check goes through Pyramid, the next ones not
    first = app.get("/auth", extra_environ=LOCAL, status=200)
    second = app.get("/auth", extra_environ=LOCAL, status=200)
    checks = [r for r in access() if r.route == "forward_auth.check"]
    assert [(r.method, r.status) for r in checks] == [("GET", 200), ("GET", 200)]
    assert [r.correlation_id for r in checks] == [first.headers["X-Request-Id"], second.headers["X-Request-Id"]]
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    # Otherwise the fast path's answer is the app's: the same identity headers.
    assert {k: v for k, v in first.headerlist if k != "X-Request-Id"} == {
        k: v for k, v in second.headerlist if k != "X-Request-Id"
    }


def test_a_signed_in_request_s_line_names_the_user(make_app, idp, access):
    app = make_app(**ON)
    sign_in(app, idp, "alice@example.com")
    whoami = app.get("/whoami").json
    (record,) = [r for r in access() if r.route == "whoami"]
    assert record.user_id == whoami["id"]


def test_no_line_and_no_layer_when_off(make_app, access):
    for app in (make_app(), make_app(**{"logging.access": "false"})):
        assert isinstance(app.app, FastPath)
        app.get("/healthz")
        app.get("/auth", extra_environ=LOCAL, status=401)
    assert access() == []


def test_a_bad_value_stops_start_up_naming_the_key(make_app):
    from gateway import ConfigError

    with pytest.raises(ConfigError, match=r'^logging.access: expected true or false, got "sometimes"'):
        make_app(**{"logging.access": "sometimes"})


def test_json_lines_carry_the_fields_as_keys_and_the_id_returned(make_app, json_log):  # noqa: F811
    app = make_app(**ON)
    response = app.post("/saml/acs", {}, status=400)
    lines = [line for line in json_log() if line["logger"] == "gateway.access"]
    assert len(lines) == 1
    (line,) = lines
    assert set(line) >= FIELDS | {"time", "level", "message"}
    assert line["correlation_id"] == response.headers["X-Request-Id"]
    assert (line["method"], line["route"], line["status"]) == ("POST", "saml.acs", 400)
    assert line["duration_ms"] > 0
    # The request's own lines (the refusal) carry the same id.
    refusal = next(x for x in json_log() if x["message"].startswith("saml refused"))
    assert refusal["correlation_id"] == line["correlation_id"]


# ---------------------------------------------------------------- a running server


LOGGING = logging_sections(gateway_level="INFO", json=True)


def _json_lines(text: str) -> list[dict]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.mark.slow
def test_pserve_writes_a_json_access_line_per_request_to_stderr(tmp_path, pserve):
    from conftest import free_port, stop
    from scim_support import write_ini

    port = free_port()
    ini = write_ini(tmp_path / "gateway.ini", f"sqlite:///{tmp_path}/gateway.sqlite", port, server={"workers": 1}, **ON)
    text = ini.read_text()
    ini.write_text(text[: text.index("[loggers]")] + LOGGING)
    served = pserve(ini, port)
    base = served.url

    cookies = _sign_in(base, "alice@example.com")
    answers = [
        ("GET", "forward_auth.check", 200, _send(f"{base}/auth", cookies=cookies)),
        ("GET", "forward_auth.check", 200, _send(f"{base}/auth", cookies=cookies)),
        ("GET", "forward_auth.check", 401, _send(f"{base}/auth")),
        ("GET", "whoami", 200, _send(f"{base}/whoami", cookies=cookies)),
        ("GET", None, 404, _send(f"{base}/no/such/page")),
    ]
    stop(served.process)
    lines = [line for line in _json_lines(served.log_path.read_text()) if line["logger"] == "gateway.access"]
    by_id = {line["correlation_id"]: line for line in lines}
    for method, route, status, (answered, headers, _) in answers:
        assert answered == status
        line = by_id[headers["X-Request-Id"]]
        assert (line["method"], line["route"], line["status"]) == (method, route, status)
        assert line["level"] == "INFO" and line["duration_ms"] > 0
    # The sign-in's requests are there too: login, the development IdP, the ACS.
    assert {"saml.login", "saml.acs"} <= {line["route"] for line in lines}
