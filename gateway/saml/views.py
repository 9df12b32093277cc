"""SAML sign-in, logout and the pages around them.

Route names are dotted (``saml.login``, ``saml.acs``, ...). Every refusal is
a :class:`SamlRejection` rendered by :func:`rejection_response` as a plain
page with a reason code and the correlation id.
"""

from __future__ import annotations

import logging
import time

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response
from pyramid.view import view_config

from .. import sessions
from ..db.models import utcnow
from ..forward_auth import urls
from ..metrics import instruments
from ..provisioning.signin import fire, identity_from_claims, sign_in
from ..templating import html_page
from . import browser, replay, testsignin
from . import slo as slo_module
from .errors import ASK_ADMIN, SamlRejection, rejection_response
from .xmlguard import safe_parse

log = logging.getLogger("gateway.saml")


def sp(request):
    return request.registry.saml_sp


def local_path(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else None (open-redirect guard); "/" when empty."""
    if value is None or value == "":
        return "/"
    return urls.local_path(value)


def return_target(request, value: str | None) -> str | None:
    """Where to send the browser after sign-in: a local path, or an absolute URL
    of a forward-auth app (``forward_auth.allowed_hosts``); None when refused.

    The same check as forward-auth's ``rd``, so that every URL the gateway
    sends a signed-out visitor to sign in with is also one it returns to.
    """
    if value is None or value == "":
        return "/"
    return request.registry.forward_auth.targets.check(value)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- pages


@view_config(route_name="home", request_method="GET", renderer="home.html", decorator=html_page)
def home(request):
    identity = request.identity
    if identity is None:
        return {"identity": None, "label": request.registry.saml_sp.profile.label}
    # The one mapped profile, as /whoami and forward-auth show it.
    profile = identity.as_json()
    rows = [
        ("Name", profile["displayName"]),
        ("User name", profile["userName"]),
        ("Email", profile["email"] or ""),
        ("Groups", ", ".join(profile["groups"])),
    ]
    rows += [(_label(key), _text(value)) for key, value in sorted(profile["attributes"].items())]
    return {"identity": identity, "rows": rows}


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@view_config(route_name="whoami", request_method="GET", renderer="json")
def whoami(request):
    identity = request.identity
    request.response.headers["Cache-Control"] = "no-store"
    if identity is None:
        request.response.status_int = 401
        return {"error": "not signed in", "login": request.route_url("saml.login")}
    return identity.as_json()


# ---------------------------------------------------------------- SAML


@view_config(route_name="saml.metadata", request_method="GET")
def metadata(request):
    response = Response(sp(request).sp_metadata(), content_type="application/samlmetadata+xml")
    response.charset = "utf-8"
    return response


@view_config(route_name="saml.login", request_method="GET")
def login(request):
    try:
        next_path = return_target(request, request.GET.get("next"))
        if next_path is None:
            raise SamlRejection("unsafe_next", "The address to return to after sign-in is not on this site.")
        request_id, location = sp(request).authn_request()
    except SamlRejection as exc:
        return rejection_response(request, exc)
    # The request id is bound to this browser: a random value in a cookie, its
    # hash in the row. A response only completes the sign-in of the browser
    # that started it, even when an attacker replays it into another one.
    browser.remember(request, request_id, "authn", next_path, durable=False)
    return _no_store(HTTPSeeOther(location=location))


@view_config(route_name="saml.acs", request_method="POST")
def acs(request):
    started = time.perf_counter()
    try:
        return _acs(request)
    except SamlRejection as exc:
        return rejection_response(request, exc)
    finally:
        instruments.SIGNIN_DURATION.observe(time.perf_counter() - started)


def _acs(request):
    provider = sp(request)
    saml_response = request.POST.get("SAMLResponse")
    if not saml_response:
        raise SamlRejection("missing_response", "The sign-in message is missing.")
    # Decoded and parsed once: the guard's checks, InResponseTo and the
    # response checks all read this tree (pysaml2 then reads the same bytes).
    root = safe_parse(provider.decode(saml_response))
    in_response_to = root.get("InResponseTo")
    # One look-up of the request row, shared with browser.bound below.
    row = browser.find(request, in_response_to) if in_response_to else None
    if row is not None and row.kind == testsignin.KIND:
        # The answer to a test sign-in (/admin/test) becomes a report, never a session.
        answered = testsignin.answer(request)
        if answered is not None:
            return answered
    relay_state = request.POST.get("RelayState")
    # An IdP-initiated RelayState (Entra's "Relay State") may name a page of a
    # forward-auth app: the same allow-list as next, so it is no open redirect.
    if relay_state is not None and return_target(request, relay_state) is None:
        raise SamlRejection("unsafe_relay_state", "The address to return to after sign-in is not on this site.")
    now = utcnow()

    next_path = "/"
    if in_response_to:
        row = browser.bound(request, in_response_to, "authn", now, row)
        next_path = row.next_path
    elif not provider.saml.allow_idp_initiated:
        raise SamlRejection(
            "unsolicited",
            "Sign-in started at the identity provider (for example from My Apps) is turned off here.",
            hint="Start the sign-in from this site instead.",
        )
    elif relay_state:
        next_path = return_target(request, relay_state) or "/"

    verified = provider.check_response(saml_response, now, solicited_by=in_response_to, root=root)

    if in_response_to:
        # Single use, atomically, on every instance.
        browser.use(request, in_response_to, "authn", now)
    _remember_assertion(request, verified.assertion_id, verified.expires_at, now)

    identity = identity_from_claims(provider.profile, verified.name_id, verified.attributes, verified.issuer)
    result = sign_in(request, identity)
    if result.decision.action == "deny":
        return rejection_response(
            request,
            SamlRejection("denied", result.decision.reason, status=403, hint=ASK_ADMIN),
            title="Sign-in refused",
        )
    sessions.start_session(request, result.user.id, name_id=verified.name_id, session_index=verified.session_index)
    instruments.SIGNIN_SUCCESS.inc()
    log.info(
        "signed in user=%s created=%s assertion=%s correlation_id=%s",
        result.user.user_name,
        result.created,
        verified.assertion_id,
        request.correlation_id,
    )
    if in_response_to:
        browser.forget(request, in_response_to)
    # Checked again: the allowed hosts may have changed since the sign-in started.
    target = return_target(request, next_path) or "/"
    location = request.application_url + target if target.startswith("/") else target
    return _no_store(HTTPSeeOther(location=location))


def _remember_assertion(request, assertion_id: str, expires_at, now) -> None:
    """Replay cache shared by every instance (gateway/saml/replay.py): an id is refused until it expires."""
    if not replay.first_use(request.dbsession, assertion_id, expires_at, now):
        raise SamlRejection("replay", "This sign-in answer was already used.", status=403)


# ---------------------------------------------------------------- logout


@view_config(route_name="logout", request_method="POST")
def logout(request):
    identity = request.identity
    if identity is not None and not sessions.check_csrf(request, request.POST.get("csrf_token")):
        return rejection_response(
            request,
            SamlRejection("csrf", "The sign-out form expired. Go back, reload the page and try again.", status=403),
            title="Sign-out failed",
        )
    sessions.end_session(request)
    if identity is None:
        return _no_store(HTTPSeeOther(location=request.route_url("home")))
    fire(request, "signed_out", identity.user_id, identity.user_name)
    location = request.route_url("home")
    if identity.name_id:
        sent = slo_module.logout_request(sp(request), identity)
        if sent is not None:
            # The LogoutResponse must answer this request, in this browser.
            request_id, location = sent
            browser.remember(request, request_id, "logout")
    return _no_store(HTTPSeeOther(location=location))


@view_config(route_name="saml.slo", request_method=("GET", "POST"))
def slo(request):
    try:
        return slo_module.single_logout(sp(request), request)
    except SamlRejection as exc:
        return rejection_response(request, exc, title="Sign-out failed")
