"""The test IdP on a real port for tests/test_production.py: the kit's
:class:`gateway.testing.idp_server.IdpServer` with Alice as the one person
and the metadata file named as that test names it."""

from __future__ import annotations

from gateway.testing.idp_server import IdpServer
from gateway.testing.saml import TestIdp


class LiveIdp(IdpServer):
    """``IdpServer`` for a gateway at ``base_url``; ``people`` maps userName to claims (default: Alice)."""

    def __init__(self, idp: TestIdp, base_url: str, people: dict[str, dict] | None = None):
        super().__init__(idp, base_url, people or {"alice@example.com": idp.claims("alice@example.com")})

    def write_metadata(self, name: str = "live-idp-metadata.xml") -> str:
        return super().write_metadata(self.idp.folder / name)
