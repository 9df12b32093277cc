"""Every SCIM error, as RFC 7644 §3.12 error JSON, built in this one place.

Views and helpers raise :class:`ScimError` (or one of the shortcuts below);
the exception views registered by :func:`includeme` turn it, and Pyramid's own
404/405 under ``/scim/``, and any unexpected exception there, into the
``urn:ietf:params:scim:api:messages:2.0:Error`` body with ``status`` as a
string, as Entra's parser expects. Raising (instead of returning a response)
matters: pyramid_tm aborts the transaction when a view raised, so a request
that fails half-way leaves no partial write behind.
"""

from __future__ import annotations

import logging

from pyramid.httpexceptions import HTTPMethodNotAllowed, HTTPNotFound
from pyramid.response import Response

from .. import jsoncodec

log = logging.getLogger(__name__)

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_CONTENT_TYPE = "application/scim+json"

#: The scimType values of RFC 7644 table 9 that this server uses.
SCIM_TYPES = frozenset(
    {
        "invalidFilter",
        "tooMany",
        "uniqueness",
        "mutability",
        "invalidSyntax",
        "invalidPath",
        "noTarget",
        "invalidValue",
        "invalidVers",
        "sensitive",
    }
)


class ScimError(Exception):
    """A SCIM failure: HTTP ``status``, optional ``scim_type``, human ``detail``."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None, headers: dict | None = None):
        assert scim_type is None or scim_type in SCIM_TYPES, scim_type
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers or {}


def bad_request(scim_type: str, detail: str) -> ScimError:
    return ScimError(400, detail, scim_type)


def not_found(detail: str) -> ScimError:
    return ScimError(404, detail)


def conflict(detail: str) -> ScimError:
    return ScimError(409, detail, "uniqueness")


def unauthorized(detail: str) -> ScimError:
    # RFC 6750 §3: a bearer-protected resource names its scheme on a 401.
    return ScimError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="scim"'})


def error_body(status: int, detail: str, scim_type: str | None = None) -> dict:
    body = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def error_response(status: int, detail: str, scim_type: str | None = None, headers: dict | None = None) -> Response:
    response = Response(
        status=status,
        body=jsoncodec.dumps(error_body(status, detail, scim_type)),
        content_type=SCIM_CONTENT_TYPE,
        charset=None,
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _scim_error_view(exc, request):
    request.correlation_id  # noqa: B018  (echoed as X-Request-Id on every SCIM answer, refusals too)
    return error_response(exc.status, exc.detail, exc.scim_type, exc.headers)


def _not_found_view(exc, request):
    # No SCIM view ran (nothing matched): the provisioning log still gets its row.
    request.registry.provisioning_log.begin(request)
    request.correlation_id  # noqa: B018
    return error_response(404, f"no SCIM endpoint at {request.path}")


def _method_not_allowed_view(exc, request):
    request.registry.provisioning_log.begin(request)
    request.correlation_id  # noqa: B018
    return error_response(405, f"{request.method} is not allowed on {request.path}")


def _unexpected_view(exc, request):
    from ..guard import database_unavailable

    if database_unavailable(exc):
        raise exc  # answered 503 with Retry-After by gateway.guard, for every route alike
    # The traceback goes to the log with the correlation id; the client sees
    # only that id, never internals.
    log.exception("SCIM request failed [%s]", request.correlation_id)
    return error_response(500, f"internal error; correlation id {request.correlation_id}")


def includeme(config):
    scim_paths = r"^/scim(/|$)"
    config.add_exception_view(_scim_error_view, context=ScimError)
    config.add_exception_view(_not_found_view, context=HTTPNotFound, path_info=scim_paths)
    config.add_exception_view(_method_not_allowed_view, context=HTTPMethodNotAllowed, path_info=scim_paths)
    config.add_exception_view(_unexpected_view, context=Exception, path_info=scim_paths)
