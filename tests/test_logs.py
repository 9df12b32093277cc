"""JSON log lines (gateway/logs.py), switched on from the ini's logging section as docs/operations.md shows."""

import json
import logging

import pytest
from pyramid.paster import setup_logging

INI = """\
[loggers]
keys = root

[handlers]
keys = file

[formatters]
keys = json

[logger_root]
level = INFO
handlers = file

[handler_file]
class = FileHandler
args = ({path!r}, "a", "utf-8")
level = NOTSET
formatter = json

[formatter_json]
class = gateway.logs.JsonFormatter
"""


@pytest.fixture
def json_log(tmp_path):
    """Logging as an ini with the JSON formatter sets it up; the lines written so far, parsed."""
    path = tmp_path / "gateway.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(INI.format(path=str(path)))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    setup_logging(str(ini))
    yield lambda: [json.loads(line) for line in path.read_text().splitlines()]
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logging.getLogger("gateway").disabled = False  # fileConfig disables loggers the ini does not name


def test_a_request_s_lines_carry_the_correlation_id_it_returned(app, json_log):
    response = app.post("/saml/acs", {}, status=400)
    lines = [line for line in json_log() if line["message"].startswith("saml refused")]
    assert lines, json_log()
    line = lines[-1]
    assert set(line) >= {"time", "level", "logger", "message", "correlation_id", "route"}
    assert line["correlation_id"] == response.headers["X-Request-Id"]
    assert line["level"] == "WARNING" and line["route"] == "saml.acs"
    assert line["time"].endswith("+00:00")
    assert "reason=missing_response" in line["message"]


def test_a_line_outside_a_request_has_no_request_fields(json_log):
    logging.getLogger("gateway.test").info("started %s", "up", extra={"workers": 2})
    (line,) = json_log()
    assert line["message"] == "started up" and line["logger"] == "gateway.test" and line["workers"] == 2
    assert "correlation_id" not in line and "route" not in line


def test_no_request_secret_reaches_a_line(app, json_log):
    app.get(
        "/whoami",
        headers={"Authorization": "Bearer do-not-log-me", "Cookie": "gateway_session=do-not-log-me"},
        status=401,
    )
    logging.getLogger("gateway").warning("after the request")
    text = json.dumps(json_log())
    assert "do-not-log-me" not in text
