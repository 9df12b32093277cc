"""Test sign-ins: a real round trip through the IdP that ends in a report, never in a session.

An admin starts one from ``/admin/test`` (or makes a one-time link for a
test user, ``/saml/test/<secret>``, valid :data:`LINK_LIFETIME`). Either way
this browser is sent to the IdP with ``ForceAuthn`` and an AuthnRequest whose
``saml_requests`` row has kind ``test``, bound to the browser like any other.
The IdP answers at the same ``/saml/acs``; :func:`answer` sees the kind and,
instead of signing anyone in, runs :mod:`gateway.saml.diagnose` and keeps
the report as a sign-in trace (:mod:`gateway.saml.traces`). The admin is sent
to the report; a test user sees only "thank you".

A test creates, changes and signs in nobody: the diagnosis only reads, no
event fires, and the assertion does not enter the replay cache (it answers a
test request, so no sign-in can accept it anyway). The one write is marking
the test request answered, so that a report is made once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from ..db.models import SigninTest, new_id, utcnow
from ..templating import html_page, render_page
from . import browser, traces
from .diagnose import Check, Report, diagnose
from .errors import SamlRejection

log = logging.getLogger("gateway.saml.testsignin")

#: ``saml_requests.kind`` of a test sign-in's AuthnRequest.
KIND = "test"
#: How long a test link may be opened.
LINK_LIFETIME = dt.timedelta(hours=1)
_SECRET = re.compile(r"^[A-Za-z0-9_\-]{40,64}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start(request, started_by: str, link: SigninTest | None = None) -> HTTPSeeOther | None:
    """Send this browser to the IdP for a fresh sign-in that ends in a report.

    ``link``: the test link being opened; it is used up here, atomically on
    every instance (None is returned when it was used or expired meanwhile).
    """
    # The AuthnRequest first: the first use of the IdP metadata saves it on a
    # connection of its own, which must not wait for this request's writes.
    request_id, location = request.registry.saml_sp.authn_request(force_authn=True)
    now = utcnow()
    dbsession = request.dbsession
    if link is None:
        dbsession.add(
            SigninTest(
                created_by=started_by, request_id=request_id, created_at=now, expires_at=now + browser.REQUEST_LIFETIME
            )
        )
    else:
        claimed = dbsession.execute(
            sa.update(SigninTest)
            .where(SigninTest.id == link.id, SigninTest.used_at.is_(None), SigninTest.expires_at > now)
            .values(used_at=now, request_id=request_id)
            .returning(SigninTest.id),
            execution_options={"synchronize_session": False},
        ).first()
        if claimed is None:
            return None
    browser.remember(request, request_id, KIND, "/admin/test")
    dbsession.flush()
    response = HTTPSeeOther(location=location)
    response.headers["Cache-Control"] = "no-store"
    return response


def create_link(request, created_by: str) -> str:
    """A one-time test link's URL (shown once: only its hash is stored)."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    request.dbsession.add(
        SigninTest(created_by=created_by, link_hash=_hash(secret), created_at=now, expires_at=now + LINK_LIFETIME)
    )
    request.dbsession.flush()
    return request.route_url("saml.test_link", secret=secret)


def open_links(dbsession, now: dt.datetime | None = None) -> list[SigninTest]:
    """Links not opened yet and not expired, newest first."""
    now = now or utcnow()
    return list(
        dbsession.scalars(
            sa.select(SigninTest)
            .where(SigninTest.link_hash.is_not(None), SigninTest.used_at.is_(None), SigninTest.expires_at > now)
            .order_by(SigninTest.created_at.desc())
            .limit(20)
        )
    )


# ------------------------------------------------------------------ the test user's link


def _link(request) -> SigninTest | None:
    secret = request.matchdict["secret"]
    if not _SECRET.match(secret):
        return None
    return request.dbsession.scalar(sa.select(SigninTest).where(SigninTest.link_hash == _hash(secret)))


@view_config(route_name="saml.test_link", request_method="GET", decorator=html_page)
def link_page(request):
    """The page a test link opens: one button (a link preview that fetches the URL uses nothing up)."""
    test = _link(request)
    usable = test is not None and test.used_at is None and test.expires_at > utcnow()
    return render_page(
        request,
        "signin_test_link.html",
        {"usable": usable, "label": request.registry.saml_sp.profile.label},
        status=200 if usable else 410,
    )


@view_config(route_name="saml.test_link", request_method="POST", decorator=html_page, require_csrf=False)
def link_start(request):
    """Use the link (once) and go to the IdP.

    No CSRF token: the person has no session here; the secret in the URL is
    what authorises, and whoever holds it may use it anyway.
    """
    test = _link(request)
    started = None
    if test is not None and test.used_at is None and test.expires_at > utcnow():
        started = start(request, test.created_by, test)
    if started is None:
        return render_page(
            request,
            "signin_test_link.html",
            {"usable": False, "label": request.registry.saml_sp.profile.label},
            status=410,
        )
    return started


# ------------------------------------------------------------------ the answer at /saml/acs


def answer(request):
    """The ACS's response when the POSTed SAMLResponse answers a test request, else None (a sign-in)."""
    saml_response = request.POST.get("SAMLResponse")
    if not saml_response:
        return None
    provider = request.registry.saml_sp
    try:
        in_response_to = provider.peek_in_response_to(provider.decode(saml_response))
    except SamlRejection:
        return None  # the sign-in path refuses it, with its trace
    if not in_response_to:
        return None
    row = browser.find(request, in_response_to)
    if row is None or row.kind != KIND:
        return None
    test = request.dbsession.scalar(sa.select(SigninTest).where(SigninTest.request_id == row.request_id))
    now = utcnow()
    binding = None
    try:
        browser.bound(request, in_response_to, KIND, now, row)
        browser.use(request, in_response_to, KIND, now)
    except SamlRejection as exc:
        binding = exc
    try:
        report = diagnose(request, provider, saml_response, now, in_response_to)
    except Exception:  # noqa: BLE001 - a report that could not be finished is still a report
        log.exception("test sign-in: the report could not be made; correlation_id=%s", request.correlation_id)
        report = Report(
            summary="The gateway could not finish this report: the log has the error, under the reference below.",
            reason="report_failed",
            message="The report could not be finished.",
        )
    if binding is not None:
        # The browser check is the view's, not the SP's: put it where InResponseTo is checked.
        position = next((i for i, c in enumerate(report.checks) if c.key == "in_response_to"), len(report.checks))
        report.checks.insert(
            position,
            Check("browser", "Answered in the browser that started the test", "fail", binding.message, binding.code),
        )
        report.verdict, report.reason, report.message = "failed", binding.code, binding.message
        report.summary = f"A sign-in with this response would be refused ({binding.code})."
    matched = (report.match or {}).get("user") or {}
    trace_id = new_id()
    traces.write_after_response(
        request,
        traces.trace_values(
            request,
            kind="test",
            outcome=report.verdict,
            reason=report.reason,
            message=report.message or report.summary,
            detail=report.detail,
            status=None,
            id=trace_id,
            user_id=matched.get("id"),
            user_name=matched.get("userName"),
            started_by=test.created_by if test is not None else None,
            report=report.as_json(),
        ),
    )
    if test is not None:
        test.trace_id = trace_id
    browser.forget(request, in_response_to)
    log.info(
        "test sign-in %s: %s (%s) correlation_id=%s",
        trace_id,
        report.verdict,
        report.reason or "-",
        request.correlation_id,
    )
    if test is not None and test.link_hash:
        return render_page(request, "signin_test_thanks.html", {})
    # The report is an admin page: the admin's session cookie (SameSite=Lax) comes with this redirect.
    response = HTTPSeeOther(location=request.route_url("admin.signins.trace", id=trace_id))
    response.headers["Cache-Control"] = "no-store"
    return response


def includeme(config):
    config.add_route("saml.test_link", "/saml/test/{secret}")
    config.scan(__name__)
