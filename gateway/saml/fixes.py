"""The likely fix of a refused sign-in, named where the admin makes it.

A reason code says what failed; the admin wants to know which field to
change. Most refusals of a working gateway come from a handful of settings
in the Entra admin center (entra.md 2.2, 2.7, 2.9, 2.14): the Identifier,
the Reply URL, the signing certificate, the clock, user assignment, or an
``AADSTS`` code in the IdP's status message. Each :class:`Fix` names the
place ("Enterprise applications > your app > ...") and the value to enter,
taken from this gateway's own settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APP = "Microsoft Entra admin center > Enterprise applications > (this application)"
BASIC = f"{APP} > Single sign-on > Basic SAML Configuration"
CERTS = f"{APP} > Single sign-on > SAML Certificates"
_AADSTS = re.compile(r"AADSTS(\d{5,6})")


@dataclass(frozen=True)
class Fix:
    """What to change: a short title, where, and what to do (plain sentences)."""

    title: str
    where: str
    steps: str


@dataclass(frozen=True)
class Expected:
    """The values of this gateway that Entra must hold."""

    entity_id: str
    acs_url: str
    login_url: str
    metadata_source: str = ""


def aadsts_code(text: str | None) -> str | None:
    """The first ``AADSTSnnnnn`` code in ``text``."""
    found = _AADSTS.search(text or "")
    return found.group(0) if found else None


def _identifier(expected: Expected) -> Fix:
    return Fix(
        "Wrong Identifier (Entity ID)",
        BASIC,
        f"Set Identifier (Entity ID) to {expected.entity_id} and mark it Default; Entra sends the default"
        " identifier as the audience. (saml.sp_entity_id sets this gateway's side.)",
    )


def _reply_url(expected: Expected) -> Fix:
    return Fix(
        "Wrong Reply URL",
        BASIC,
        f"Set Reply URL (Assertion Consumer Service URL) to {expected.acs_url}, exactly: it is case-sensitive."
        " It follows gateway.base_url here.",
    )


def _certificate(expected: Expected) -> Fix:
    source = expected.metadata_source or "saml.idp_metadata"
    return Fix(
        "Signing certificate rolled over or unknown",
        CERTS,
        "Entra signed with a certificate that is not in the metadata this gateway holds. Check which certificate"
        f" is Active; if it is new, refresh the metadata on the Identity provider page (source: {source}). Use the"
        " App Federation Metadata Url as saml.idp_metadata so that new certificates arrive by themselves.",
    )


_AADSTS_FIXES = {
    "AADSTS50105": lambda e: Fix(
        "User not assigned to the application",
        f"{APP} > Users and groups",
        "Add the person (or a group they are in) with Add user/group, or set Properties > Assignment required to No.",
    ),
    "AADSTS50011": _reply_url,
    "AADSTS700016": lambda e: Fix(
        "Entra does not know this Identifier",
        BASIC,
        f"Entra found no application with the identifier {e.entity_id}: set Identifier (Entity ID) to it, in the"
        " tenant whose metadata this gateway uses.",
    ),
    "AADSTS75011": lambda e: Fix(
        "Authentication method mismatch",
        f"{APP} > Conditional Access",
        "The person signed in with a method the request did not ask for; this gateway asks for none, so check"
        " a proxy or plugin that adds RequestedAuthnContext.",
    ),
    "AADSTS750054": lambda e: Fix(
        "Binding mismatch",
        BASIC,
        f"Entra expects the request by HTTP-Redirect and answers by HTTP-POST to {e.acs_url}; start the sign-in"
        f" at {e.login_url}.",
    ),
    "AADSTS53003": lambda e: Fix(
        "Blocked by Conditional Access",
        "Microsoft Entra admin center > Protection > Conditional Access",
        "A Conditional Access policy blocked the sign-in; the Sign-in logs name the policy.",
    ),
    "AADSTS50076": lambda e: Fix(
        "Multi-factor authentication required",
        "Microsoft Entra admin center > Protection > Conditional Access",
        "The person must complete MFA; sign in again and finish the prompt.",
    ),
}


def likely_fix(reason: str | None, detail: str | None, message: str | None, expected: Expected) -> Fix | None:
    """The fix for a refusal with ``reason`` (a reason code), where one is known."""
    text = f"{message or ''} {detail or ''}"
    if reason == "idp_status":
        code = aadsts_code(text)
        if code in _AADSTS_FIXES:
            return _AADSTS_FIXES[code](expected)
        if code:
            return Fix(
                f"Entra refused the sign-in ({code})",
                "Microsoft Entra admin center > Monitoring > Sign-in logs",
                f"Find the sign-in by the Request Id in the message above; https://login.microsoftonline.com/error?code="
                f"{code[6:]} explains the code.",
            )
        return Fix(
            "The identity provider refused the sign-in",
            "Microsoft Entra admin center > Monitoring > Sign-in logs",
            "The status message above says why; the Sign-in logs have the details.",
        )
    if reason == "audience":
        return _identifier(expected)
    if reason in ("recipient", "destination"):
        return _reply_url(expected)
    if reason == "signature_invalid":
        return _certificate(expected)
    if reason == "issuer":
        return Fix(
            "Answer from another tenant or application",
            "saml.idp_metadata (this gateway's settings)",
            "The issuer is not the one of the metadata this gateway uses: point saml.idp_metadata at this"
            " application's App Federation Metadata Url (Single sign-on > SAML Certificates), in the right tenant.",
        )
    if reason == "signature_missing":
        return Fix(
            "Signing option",
            CERTS,
            "Under Signing Option choose Sign SAML assertion (Entra's default) or Sign SAML response and assertion,"
            " to match saml.require_signed.",
        )
    if reason in ("signature_algorithm", "digest_algorithm"):
        return Fix(
            "SHA-1 signing",
            CERTS,
            "Set Signing Algorithm to SHA-256 (or add rsa-sha1 to saml.allowed_signature_algorithms, not advised).",
        )
    if reason in ("not_yet_valid", "expired"):
        return Fix(
            "Clock difference",
            "this server's clock (NTP)",
            "Entra's clock is right: compare this server's time with an NTP source (timedatectl status) and fix it."
            " saml.clock_skew tolerates up to 600 seconds. An answer posted long after the sign-in (a tab left"
            " open) expires too: start again.",
        )
    if reason == "unsolicited":
        return Fix(
            "Sign-in started in My Apps",
            BASIC,
            f"Set Sign on URL to {expected.login_url}, so that My Apps starts the sign-in here; or allow"
            " IdP-initiated sign-in with saml.allow_idp_initiated = true.",
        )
    if reason == "encrypted_assertion":
        return Fix(
            "Token encryption is on",
            f"{APP} > Token encryption",
            "Deactivate the token encryption certificate: this gateway does not decrypt assertions.",
        )
    if reason == "denied":
        return Fix(
            "Refused by this gateway's provisioning policy",
            f"{APP} > Users and groups, and > Provisioning",
            "The sentence above is the policy's reason. With provisioning.mode = scim the person must be assigned to"
            " the application and provisioned first: check the Provisioning logs in Entra and /admin/provisioning.",
        )
    if reason == "idp_metadata_unavailable":
        return Fix(
            "No usable IdP metadata",
            f"{CERTS} > App Federation Metadata Url",
            "Set saml.idp_metadata to that URL; the Identity provider page shows the last refresh error.",
        )
    return None
