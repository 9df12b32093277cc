"""The gateway's counters and histograms, shared by the worker processes (DESIGN.md, Metrics).

Import this module, never ``prometheus_client`` directly, wherever something
is counted: it sets up the multiprocess directory first
(:mod:`gateway.metrics.directory`). Names and labels are part of the
contract; every label takes values from a small fixed set (never a user
name, email or id), so a series is never made per person.

What is read from the database or the IdP metadata at scrape time (active
sessions, users, certificates, tokens, build) is not here but in
:mod:`gateway.metrics.collector`: a value kept per worker would be stale in
every worker but the one that last changed it.
"""

from __future__ import annotations

from .directory import ensure

ensure()

from prometheus_client import Counter, Gauge, Histogram, values  # noqa: E402 - only after ensure()

if not getattr(values.ValueClass, "_multiprocess", False):
    # Something (a plugin, a test) imported prometheus_client before the
    # directory was set: its value class is per process. The one internal this
    # relies on, pinned by tests/test_metrics.py, which imports prometheus_client first.
    values.ValueClass = values.MultiProcessValue()

#: The SCIM resource label: the resource types, discovery, and nothing else.
SCIM_RESOURCES = {"users": "Users", "groups": "Groups"}
#: Methods a SCIM client uses; any other becomes "other", so a client cannot add series.
SCIM_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

SIGNINS = Counter(
    "gateway_signins_total", "SAML sign-ins at the ACS, by outcome and refusal reason.", ["outcome", "reason"]
)
SIGNIN_DURATION = Histogram(
    "gateway_signin_duration_seconds",
    "Time to answer an ACS request (the IdP's POST), in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SCIM_REQUESTS = Counter(
    "gateway_scim_requests_total",
    "SCIM requests answered, by method, resource and status.",
    ["method", "resource", "status"],
)
SCIM_DURATION = Histogram(
    "gateway_scim_request_duration_seconds",
    "Time to answer a SCIM request, in seconds.",
    ["method", "resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FORWARD_AUTH = Counter(
    "gateway_forward_auth_total",
    "Forward-auth (/auth) answers: allow (200), deny (403), unauthenticated (401).",
    ["decision"],
)
METADATA_REFRESHED = Gauge(
    "gateway_idp_metadata_last_refresh_timestamp_seconds",
    "When a worker last loaded usable IdP metadata (Unix time).",
    # The latest of all workers': a replaced worker's older time never wins.
    multiprocess_mode="max",
)
METADATA_FAILURES = Counter(
    "gateway_idp_metadata_refresh_failures_total", "IdP metadata loads or refreshes that failed."
)

# Bound once: the fast path of /auth only increments.
FORWARD_AUTH_ALLOW = FORWARD_AUTH.labels("allow")
FORWARD_AUTH_DENY = FORWARD_AUTH.labels("deny")
FORWARD_AUTH_UNAUTHENTICATED = FORWARD_AUTH.labels("unauthenticated")
SIGNIN_SUCCESS = SIGNINS.labels("success", "")


def scim_request(
    method: str, matched_resource: str | None, route_name: str | None, status: int, seconds: float
) -> None:
    """Count one SCIM request (called from the provisioning log's response callback)."""
    method = method if method in SCIM_METHODS else "other"
    if matched_resource is not None:
        resource = SCIM_RESOURCES.get(matched_resource.lower(), "other")
    else:
        resource = "discovery" if route_name == "scim.discovery" else "other"
    SCIM_REQUESTS.labels(method, resource, str(status)).inc()
    SCIM_DURATION.labels(method, resource).observe(seconds)


def signin_refused(reason: str) -> None:
    """Count a refused sign-in; ``reason`` is a refusal code of the code base (a fixed set)."""
    SIGNINS.labels("refused", reason).inc()
