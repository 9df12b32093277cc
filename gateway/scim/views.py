"""SCIM HTTP endpoints under ``/scim/v2``: parse the request, call the service.

Every view is wrapped by :func:`scim_view`, which checks the bearer token
first (so an unauthenticated client learns nothing, not even a 404), then
hands the view a :class:`~gateway.scim.service.ScimService` bound to the
token's name. Unknown query parameters (Entra's ``?aadOptscim062020``) are
ignored everywhere.
"""

from __future__ import annotations

import functools

from pyramid.response import Response
from pyramid.view import view_config

from .. import jsoncodec
from ..provisioning import SCIM_DISABLED, scim_enabled
from .errors import SCIM_CONTENT_TYPE, ScimError, bad_request, unauthorized
from .filters import parse_filter
from .provlog import remember_body
from .resources import etag, parse_attribute_list, project, render
from .schemas import LIST_RESPONSE, service_provider_config
from .service import ScimService
from .storage import Query

ACCEPTED_TYPES = ("application/scim+json", "application/json")
DEFAULT_COUNT = 100


def scim_view(view):
    @functools.wraps(view)
    def wrapper(context, request):
        # Every request, refused ones included, gets its provisioning log row.
        request.registry.provisioning_log.begin(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise unauthorized("a bearer token is required")
        token = request.registry.scim_tokens.verify(presented.strip(), request.client_addr)
        if token is None:
            raise unauthorized("the bearer token is not valid")
        if not scim_enabled(request.registry.gateway_settings):
            raise ScimError(403, SCIM_DISABLED)
        request.scim = ScimService(request, token.name)
        request.correlation_id  # noqa: B018  (echoed on every SCIM response, for the client's logs)
        return view(context, request)

    return wrapper


def base_url(request) -> str:
    return request.registry.gateway_settings.gateway.base_url + "/scim/v2"


def scim_response(body, status: int = 200, version: int | None = None, location: str | None = None) -> Response:
    response = Response(status=status, body=jsoncodec.dumps(body), content_type=SCIM_CONTENT_TYPE, charset=None)
    if version is not None:
        response.headers["ETag"] = etag(version)
    if location:
        response.headers["Location"] = location
    return response


def read_json(request):
    """The request body as JSON: right media type, within scim.max_body_bytes."""
    limit = request.registry.gateway_settings.scim.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ScimError(413, f"request body larger than {limit} bytes")
    media_type = (request.content_type or "").lower()
    if media_type and media_type not in ACCEPTED_TYPES:
        raise ScimError(415, f"send application/scim+json or application/json, not {media_type}")
    if request.is_body_seekable:
        # pyramid_retry copied the body before the first attempt: each attempt reads it from the start.
        request.body_file_raw.seek(0)
    raw = request.body_file.read(limit + 1)
    if len(raw) > limit:
        raise ScimError(413, f"request body larger than {limit} bytes")
    try:
        body = jsoncodec.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one, and nesting beyond jsoncodec.MAX_DEPTH
        raise bad_request("invalidSyntax", f"the request body is not valid JSON: {exc}") from None
    if b"\\u0000" in raw and jsoncodec.contains_nul(body):
        # PostgreSQL cannot store NUL in text; refused on SQLite too, so both behave alike.
        raise bad_request("invalidValue", "strings must not contain the NUL character (\\u0000)")
    remember_body(request, body)
    return body


class Params:
    """List parameters, case-insensitively, from the query string or a
    POST ``.search`` body (RFC 7644 §3.4.3)."""

    def __init__(self, source: dict):
        self.values = {}
        for key, value in source.items():
            self.values.setdefault(key.lower(), value)

    def get(self, name: str):
        value = self.values.get(name.lower())
        if isinstance(value, list):  # a search body may list attributes
            value = ",".join(str(v) for v in value)
        return None if value is None else str(value) if not isinstance(value, str) else value

    def integer(self, name: str, default: int) -> int:
        raw = self.values.get(name.lower())
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except (TypeError, ValueError, OverflowError):
            raise bad_request("invalidValue", f"{name} must be an integer, got {raw!r}") from None
        if not -(2**63) <= value < 2**63:  # what both databases can compare and offset by
            raise bad_request("invalidValue", f"{name} is out of range")
        return value


def _param(request, name: str) -> str | None:
    return Params(request.GET).get(name)


def _projection(request, rt, params: Params | None = None, strict: bool = True):
    params = params or Params(request.GET)
    include = parse_attribute_list(params.get("attributes"), rt, strict)
    exclude = parse_attribute_list(params.get("excludedAttributes"), rt, strict)
    return include, exclude


def _wants_members(include, exclude) -> bool:
    if any(name == "members" and sub is None for _, name, sub in exclude):
        return False
    return not include or any(name == "members" for _, name, _ in include)


def _one(request, kind: str, record, status: int = 200):
    rt = request.registry.scim_resource_types[kind]
    include, exclude = _projection(request, rt)
    body = project(render(record, rt, base_url(request)), include, exclude)
    location = body["meta"]["location"] if status == 201 and "meta" in body else None
    return scim_response(body, status, version=record.version, location=location)


def _query(request, kind: str, params: Params, start_index: int, count: int, strict: bool = True):
    """Run one resource type's list query; returns (page, rendered resources)."""
    rt = request.registry.scim_resource_types[kind]
    include, exclude = _projection(request, rt, params, strict)
    query = Query(
        start_index=start_index,
        count=count,
        with_members=kind == "Group" and _wants_members(include, exclude),
    )
    text = params.get("filter")
    if text is not None:
        query.filter = parse_filter(text, rt)
    sort_by = params.get("sortBy")
    if sort_by:
        resolved = rt.resolve(sort_by)
        if resolved is None:
            raise bad_request("invalidValue", f'cannot sort by unknown attribute "{sort_by}"')
        query.sort_by = resolved
    order = (params.get("sortOrder") or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise bad_request("invalidValue", f'sortOrder must be ascending or descending, got "{order}"')
    query.descending = order == "descending"
    page = request.scim.query(kind, query)
    url = base_url(request)
    return page, [project(render(r, rt, url), include, exclude) for r in page.resources]


def _paging(request, params: Params) -> tuple[int, int]:
    max_page = request.registry.gateway_settings.scim.max_page_size
    start_index = max(1, params.integer("startIndex", 1))
    count = min(max(0, params.integer("count", min(DEFAULT_COUNT, max_page))), max_page)
    return start_index, count


def _list_response(total: int, start_index: int, resources: list) -> Response:
    return scim_response(
        {
            "schemas": [LIST_RESPONSE],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )


def _list(request, kind: str, params: Params):
    start_index, count = _paging(request, params)
    page, resources = _query(request, kind, params, start_index, count)
    return _list_response(page.total, start_index, resources)


def _search_body(request) -> Params:
    body = read_json(request)
    if not isinstance(body, dict):
        raise bad_request("invalidSyntax", "a search request must be a JSON object")
    return Params({k: v for k, v in body.items() if k != "schemas"})


def _not_modified(request, record) -> Response | None:
    header = request.headers.get("If-None-Match")
    if header and any(t.strip() in ("*", etag(record.version)) for t in header.split(",")):
        response = Response(status=304)
        response.headers["ETag"] = etag(record.version)
        return response
    return None


# ------------------------------------------------------------------ Users and Groups


def _kind(request) -> str:
    return "User" if request.matchdict["resource"].lower() == "users" else "Group"


def list_resources(request):
    return _list(request, _kind(request), Params(request.GET))


def search_resources(request):
    return _list(request, _kind(request), _search_body(request))


def search_everything(request):
    """POST /.search: users, then groups, paged as one list (RFC 7644 §3.4.3).

    A filter naming an attribute only one resource type has searches that
    type alone; one that neither knows is a 400 invalidFilter.
    """
    params = _search_body(request)
    start_index, count = _paging(request, params)
    kinds = []
    text = params.get("filter")
    error = None
    for kind in ("User", "Group"):
        try:
            if text is not None:
                parse_filter(text, request.registry.scim_resource_types[kind])
            kinds.append(kind)
        except ScimError as exc:
            error = exc
    if not kinds:
        raise error
    total, resources, skip = 0, [], start_index - 1
    for kind in kinds:
        # Ask each type for the part of the combined page that falls in it.
        page, _ = _query(request, kind, params, 1, 0, strict=False)
        wanted = max(0, count - len(resources))
        if skip < page.total and wanted:
            _, rendered = _query(request, kind, params, skip + 1, wanted, strict=False)
            resources += rendered
        skip = max(0, skip - page.total)
        total += page.total
    return _list_response(total, start_index, resources)


def create_resource(request):
    body = read_json(request)
    kind = _kind(request)
    record = request.scim.create_user(body) if kind == "User" else request.scim.create_group(body)
    return _one(request, kind, record, status=201)


def get_resource(request):
    kind = _kind(request)
    rt = request.registry.scim_resource_types[kind]
    include, exclude = _projection(request, rt)
    record = request.scim.get(kind, request.matchdict["id"], with_members=_wants_members(include, exclude))
    return _not_modified(request, record) or _one(request, kind, record)


def replace_resource(request):
    body = read_json(request)
    kind, resource_id = _kind(request), request.matchdict["id"]
    if kind == "User":
        record = request.scim.replace_user(resource_id, body)
    else:
        record = request.scim.replace_group(resource_id, body)
    return _one(request, kind, record)


def patch_resource(request):
    body = read_json(request)
    kind, resource_id = _kind(request), request.matchdict["id"]
    if kind == "User":
        return _one(request, kind, request.scim.patch_user(resource_id, body))
    record = request.scim.patch_group(resource_id, body)
    # Entra expects 204 for group PATCH ("returning all the members isn't
    # advisable"); a client that asks for attributes gets the group back.
    if _param(request, "attributes") or _param(request, "excludedAttributes"):
        rt = request.registry.scim_resource_types[kind]
        include, exclude = _projection(request, rt)
        return _one(request, kind, request.scim.get(kind, resource_id, with_members=_wants_members(include, exclude)))
    response = Response(status=204)
    response.headers["ETag"] = etag(record.version)
    return response


def delete_resource(request):
    kind, resource_id = _kind(request), request.matchdict["id"]
    if kind == "User":
        request.scim.delete_user(resource_id)
    else:
        request.scim.delete_group(resource_id)
    return Response(status=204)


def _by_method(request, **handlers):
    """The handler for the request's method (HEAD as GET), or a SCIM 405.

    One view per route that picks by method: with a view per method, Pyramid
    tried them in turn and built an HTTP exception for every miss.
    """
    method = "GET" if request.method == "HEAD" else request.method
    handler = handlers.get(method)
    if handler is None:
        raise ScimError(405, f"{request.method} is not allowed on {request.path}")
    return handler(request)


@view_config(route_name="scim.collection", decorator=scim_view)
def collection(request):
    return _by_method(request, GET=list_resources, POST=create_resource)


@view_config(route_name="scim.collection_search", decorator=scim_view)
def collection_search(request):
    return _by_method(request, POST=search_resources)


@view_config(route_name="scim.search", decorator=scim_view)
def search(request):
    return _by_method(request, POST=search_everything)


@view_config(route_name="scim.resource", decorator=scim_view)
def resource(request):
    return _by_method(request, GET=get_resource, PUT=replace_resource, PATCH=patch_resource, DELETE=delete_resource)


# ------------------------------------------------------------------ discovery


@view_config(route_name="scim.me", decorator=scim_view)
def me(request):
    raise ScimError(501, "/Me is not supported: a provisioning client has no user of its own")


@view_config(route_name="scim.discovery", decorator=scim_view)
def discovery_view(request):
    return _by_method(request, GET=discovery)


def discovery(request):
    what = request.matchdict["what"]
    item = request.matchdict.get("item") or ()
    item = "/".join(item)
    url = base_url(request)
    settings = request.registry.gateway_settings.scim
    types = request.registry.scim_resource_types
    if what == "ServiceProviderConfig":
        if item:
            raise ScimError(404, f"no ServiceProviderConfig/{item}")
        return scim_response(service_provider_config(url, settings.max_page_size))
    if what == "ResourceTypes":
        items = {name: rt.to_scim(url) for name, rt in types.items()}
    else:
        schemas = {}
        for rt in types.values():
            for schema in rt.schemas:
                schemas[schema.id] = schema.to_scim(url)
        items = schemas
    if item:
        found = next((v for k, v in items.items() if k.lower() == item.lower()), None)
        if found is None:
            raise ScimError(404, f"no {what}/{item}")
        return scim_response(found)
    resources = list(items.values())
    return scim_response(
        {
            "schemas": [LIST_RESPONSE],
            "totalResults": len(resources),
            "startIndex": 1,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )
