"""The example Prometheus alert rules and Grafana dashboard under deploy/ (docs/operations.md).

The rules are checked by ``promtool`` (Debian's ``prometheus`` package; ``./dev``
installs it with the optional test packages) when it is installed: ``check
rules`` and the unit tests beside them, in which each alert fires on
synthetic series of its trouble and stays quiet on normal ones. Without it
only those two tests skip: the files' structure is checked here either way,
and every metric a rule or a panel names must be one that a real scrape of
``/metrics`` serves, from an app that has served a sign-in, a SCIM call and
a forward-auth check.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from saml_support import sign_in
from scim_support import ScimClient, make_token

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "gateway-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "gateway-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")

#: Each alert and the metrics it must look at: what the issue asks the rules to watch.
ALERTS = {
    "GatewayIdpCertificateExpiresSoon": {"gateway_idp_certificate_not_after_timestamp_seconds"},
    "GatewayIdpMetadataRefreshFailing": {
        "gateway_idp_metadata_last_refresh_timestamp_seconds",
        "gateway_idp_metadata_refresh_failures_total",
    },
    "GatewayScimServerErrors": {"gateway_scim_requests_total"},
    "GatewayScimClientErrorsRising": {"gateway_scim_requests_total"},
    "GatewaySigninRefusalsSpiking": {"gateway_signins_total"},
}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, keywords or numbers)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers, Grafana's ${variables}
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or re.match(r"\s*\(", expr[match.end() :]):
            continue  # a keyword, or a function or aggregation being called
        names.add(word)
    return names


def test_metric_names_finds_every_selector_and_nothing_else():
    # The check below is only as good as this: a name it missed would never be looked for.
    assert metric_names('sum without (instance) (rate(up{job=~"$job", le="0.5"}[5m] offset 15m)) > 3 * 1e3') == {"up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) / on (job) b or c unless d") == {
        "a_bucket",
        "b",
        "c",
        "d",
    }
    assert metric_names("max(x) - time() < 14 * 86400") == {"x"}


# ---------------------------------------------------------------- the rules file


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"] and group["rules"]
        found += group["rules"]
    return found


def test_the_rules_have_the_shape_prometheus_reads():
    found = rules()
    assert [rule["alert"] for rule in found] == list(ALERTS)
    for rule in found:
        name = rule["alert"]
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, name
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        assert "for" not in rule or DURATION.match(rule["for"]), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert metric_names(rule["expr"]) == ALERTS[name], name


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet():
    document = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == [RULES.name]
    fired, quiet = set(), set()
    for case in document["tests"]:
        assert case["input_series"], case["name"]
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(ALERTS) and quiet == set(ALERTS)


@needs_promtool
def test_promtool_checks_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_fire_each_alert_on_trouble_and_not_otherwise():
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=RULE_TESTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# ---------------------------------------------------------------- the dashboard


def panels() -> list[dict]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # collapsed rows hold theirs
    return found


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries.append(re.fullmatch(r"label_values\((\w+),\s*\w+\)", query).group(1))
    return queries


def test_the_dashboard_has_the_shape_grafana_imports():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in panels() if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]


# ---------------------------------------------------------------- names against a real scrape


def test_every_metric_a_rule_or_a_panel_names_is_in_a_real_scrape(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra sqlstore"})
    ScimClient(app, make_token(app)).create_user("scraped@example.com")
    sign_in(app, idp, "alice@example.com")
    app.get("/auth", extra_environ={"REMOTE_ADDR": "127.0.0.1"}, status=200)
    text = app.get("/metrics", extra_environ={"REMOTE_ADDR": "127.0.0.1"}).text
    # Sample names: counters as _total, histograms as _bucket, _sum and _count.
    served = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}

    named = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            named.setdefault(name, []).append(rule["alert"])
    for query in dashboard_queries():
        for name in metric_names(query):
            named.setdefault(name, []).append("dashboard")
    missing = {name: where for name, where in named.items() if name not in served}
    assert not missing, f"named but not served: {missing}"
    # The dashboard covers every family of the contract.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in named}
    contract = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in served}
    assert families == contract
