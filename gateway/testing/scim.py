"""A SCIM client for webtest, and tokens made the way ``gateway token create`` makes them."""

from __future__ import annotations

import json

SCIM = "/scim/v2"
SCIM_JSON = "application/scim+json"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def make_token(app, name: str = "entra") -> str:
    """A SCIM token stored for ``app`` (a webtest app or the gateway's WSGI app); the secret, shown once."""
    from sqlalchemy.orm import Session

    from gateway.scim.tokens import create_token

    from .app import registry_of

    with Session(registry_of(app).db_engine) as session, session.begin():
        return create_token(session, name)


class ScimClient:
    """webtest with the bearer token, SCIM content type and the /scim/v2 prefix."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    def headers(self, extra=None):
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path, status=200, headers=None, **params):
        return self.app.get(SCIM + path, params=params or None, headers=self.headers(headers), status=status)

    def _send(self, method, path, body, status, headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return getattr(self.app, method)(
            SCIM + path,
            params=data,
            headers=self.headers(headers),
            content_type=(headers or {}).get("Content-Type", SCIM_JSON),
            status=status,
        )

    def post(self, path, body, status=201, headers=None):
        return self._send("post", path, body, status, headers)

    def put(self, path, body, status=200, headers=None):
        return self._send("put", path, body, status, headers)

    def patch(self, path, body, status=200, headers=None):
        return self._send("patch", path, body, status, headers)

    def delete(self, path, status=204, headers=None):
        return self.app.delete(SCIM + path, headers=self.headers(headers), status=status)

    # conveniences
    def create_user(self, user_name, **attributes):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, **attributes}
        return self.post("/Users", body).json

    def create_group(self, display_name, members=()):
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": display_name,
            "members": [{"value": m} for m in members],
        }
        return self.post("/Groups", body).json

    def patch_ops(self, path, *operations, status=200):
        return self.patch(path, {"schemas": [PATCH_OP], "Operations": list(operations)}, status=status)


def scim_client(app, name: str = "entra") -> ScimClient:
    """A :class:`ScimClient` on ``app`` holding a fresh token named ``name``."""
    return ScimClient(app, make_token(app, name))
