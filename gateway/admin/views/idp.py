"""``/admin/idp``: the IdP metadata in force, its certificates, "Refresh metadata now", and the values for Entra."""

from __future__ import annotations

from ...db.models import IdpMetadata
from .. import actions, done, health
from ..access import admin_view


def entra_values(request) -> list[tuple[str, str, str]]:
    """(id, label, value) of what an admin pastes into the Entra enterprise application."""
    provider = request.registry.saml_sp
    base = request.application_url
    return [
        ("identifier", "Identifier (Entity ID)", provider.entity_id),
        ("reply-url", "Reply URL (Assertion Consumer Service URL)", provider.acs_url),
        ("sign-on-url", "Sign on URL", base + "/saml/login"),
        ("logout-url", "Logout Url", provider.slo_url),
        ("scim-tenant-url", "SCIM Tenant URL (Provisioning)", base + "/scim/v2"),
        ("sp-metadata-url", "SP metadata URL (to upload instead)", base + "/saml/metadata"),
    ]


@admin_view(route_name="admin.idp", renderer="admin/idp.html")
def idp(request):
    provider = request.registry.saml_sp
    state = health.idp_health(request)
    # Refresh attempts are shared through the database: the row says what
    # any instance saw last, the store what this one did.
    saved = request.dbsession.get(IdpMetadata, state.source) if state.source else None
    return {
        "idp": state,
        "saved": saved,
        "profile": provider.profile,
        "warning_days": health.CERT_WARNING_DAYS,
        "values": entra_values(request),
        "sso_url": provider.store.info.sso_redirect_url if provider.store.info else None,
        "slo_url": provider.store.info.slo_redirect_url if provider.store.info else None,
    }


@admin_view(route_name="admin.idp.refresh", request_method="POST")
def refresh(request):
    """Fetch the metadata now (a certificate rolled over in Entra, or a failing refresh fixed)."""
    store = request.registry.saml_sp.store
    store.refresh_now()
    actor = actions.Actor.from_request(request)
    actions.record(actor, "admin.idp.refresh", "idp", target_name=store.source or "IdP profile", error=store.last_error)
    return done(request, "idp-refresh-failed" if store.last_error else "idp-refreshed", request.route_path("admin.idp"))
