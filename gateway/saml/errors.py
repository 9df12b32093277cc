"""Why a SAML message was refused: one exception, one page (templates/refusal.html).

Every refusal carries a short reason code (stable, for logs, tests and
support) and a sentence for the person. The page shows both with the
request's correlation id; the log line carries the technical detail. A
pysaml2 traceback never reaches the browser.
"""

from __future__ import annotations

import logging

from pyramid.response import Response

from ..templating import render_page

log = logging.getLogger("gateway.saml")

#: What the person can try, by the kind of failure.
TRY_AGAIN = (
    "Start the sign-in again from this site. If it keeps failing, send the reference below to your administrator."
)
ASK_ADMIN = "Send the reference below to your administrator."


class SamlRejection(Exception):
    """A SAML message the gateway refuses.

    ``code`` is a stable reason code; ``message`` is shown to the person;
    ``detail`` goes to the log only (it may hold what the IdP or pysaml2 said);
    ``status`` is 400 for malformed or stale input, 403 for a refusal.
    """

    def __init__(self, code: str, message: str, *, detail: str = "", status: int = 400, hint: str = TRY_AGAIN):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status
        self.hint = hint


def rejection_response(request, exc: SamlRejection, title: str = "Sign-in failed") -> Response:
    """Log the refusal and render its page (a normal response, so that
    what was recorded before the refusal, such as a used request id or a
    ``denied`` event, is committed)."""
    from . import traces  # not at the top: traces reads messages with xmlguard, which imports this module

    cid = request.correlation_id
    # The admin finds this refusal by the reference the page shows (/admin/signins).
    traces.record_refusal(request, exc)
    route = request.matched_route
    if route is not None and route.name == "saml.acs":
        # A sign-in is an ACS request: refusals elsewhere (login, logout) are not counted as one.
        from ..metrics import instruments

        instruments.signin_refused(exc.code)
    log.warning(
        "saml refused: reason=%s status=%s correlation_id=%s path=%s detail=%s",
        exc.code,
        exc.status,
        cid,
        request.path,
        exc.detail or exc.message,
    )
    values = {"title": title, "message": exc.message, "hint": exc.hint, "code": exc.code}
    response = render_page(request, "refusal.html", values, status=exc.status)
    response.headers["X-Reason"] = exc.code
    return response
