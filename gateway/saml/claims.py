"""The site's claim map (``saml.claims.<field>``) laid over the IdP profile's.

A site that needs one more Entra claim (a cost centre, an employee id, the
title from an extension attribute) names it in the ini instead of writing a
profile. A field given there is read only from the claims given there: the
profile's own claims for that field stop counting, so an override cannot be
undone by the order in which Entra happens to send the two claims. Giving
``subject`` also makes the first claim named the person's lasting key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..interfaces import IdpProfile


def with_site_claims(profile: IdpProfile, claims: Mapping[str, tuple[str, ...]]) -> IdpProfile:
    """``profile`` with its claim map changed by ``claims`` ({field: claim URIs}, from the settings)."""
    if not claims:
        return profile
    claim_map = {uri: target for uri, target in profile.claim_map.items() if target not in claims}
    for target, uris in claims.items():
        claim_map.update(dict.fromkeys(uris, target))
    subject_claim = claims["subject"][0] if "subject" in claims else profile.subject_claim
    return dataclasses.replace(profile, claim_map=claim_map, subject_claim=subject_claim)
