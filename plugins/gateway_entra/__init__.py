"""Microsoft Entra ID: the default IdP profile (``saml.idp_profile = entra``).

Maps Entra's SAML claim URIs onto the gateway's profile fields and names the
object identifier as the person's lasting key: it is immutable and never
reused, unlike the UPN or email that a rename changes. A site that needs
another claim names it with ``saml.claims.<field>`` (gateway.saml.claims)
rather than copying this map into a profile of its own.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import IdpProfile

XMLSOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
MICROSOFT = "http://schemas.microsoft.com/identity/claims/"
WS2008 = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"

OBJECT_ID_CLAIM = MICROSOFT + "objectidentifier"
GROUPS_CLAIM = WS2008 + "groups"
GROUPS_OVERAGE_CLAIM = "http://schemas.microsoft.com/claims/groups.link"

CLAIM_MAP = {
    XMLSOAP + "emailaddress": "email",
    XMLSOAP + "givenname": "given_name",
    XMLSOAP + "surname": "family_name",
    MICROSOFT + "displayname": "display_name",
    OBJECT_ID_CLAIM: "subject",
    MICROSOFT + "tenantid": "tenant_id",
    GROUPS_CLAIM: "groups",
    # Not emitted by default; add the claim in Entra's "Attributes & Claims".
    XMLSOAP + "title": "title",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department": "department",
    # Short names that vendor guides (and many tenants) configure instead.
    "email": "email",
    "first_name": "given_name",
    "last_name": "family_name",
    "jobtitle": "title",
    "department": "department",
}

METADATA_URL_PATTERN = (
    "https://login.microsoftonline.com/{tenant_id}/federationmetadata/2007-06/"
    "federationmetadata.xml?appid={application_id}"
)


@hookimpl
def gateway_idp_profiles():
    return [
        IdpProfile(
            name="entra",
            label="Microsoft Entra ID",
            claim_map=CLAIM_MAP,
            subject_claim=OBJECT_ID_CLAIM,
            metadata_url_pattern=METADATA_URL_PATTERN,
            groups_overage_claim=GROUPS_OVERAGE_CLAIM,
        )
    ]
