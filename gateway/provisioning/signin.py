"""Who a verified SAML sign-in is: find the user, ask the policy, create when told to.

Kept small on purpose; attribute sync on every sign-in comes with the
provisioning work. The order of lookups is ``provisioning.match_on``
(default: IdP subject, then userName, then email), so a user that SCIM
created before their first sign-in is found rather than duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..db.models import User, utcnow
from ..interfaces import Decision, Identity, UserEvent


@dataclass(frozen=True)
class SignInResult:
    user: User | None
    decision: Decision
    created: bool = False


def identity_from_claims(profile, name_id: str, attributes: dict[str, list[str]], issuer: str | None = None) -> Identity:
    """Map the claims through the IdP profile's claim map onto an Identity."""
    fields: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    groups: list[str] = []
    for claim, values in attributes.items():
        target = profile.claim_map.get(claim)
        if target is None or not values:
            continue
        if target == "groups":
            groups.extend(values)
        elif target.startswith("custom."):
            custom[target[len("custom.") :]] = values[0] if len(values) == 1 else list(values)
        else:
            fields.setdefault(target, values[0])
    subject = None
    if profile.subject_claim:
        subject = (attributes.get(profile.subject_claim) or [None])[0]
    subject = subject or fields.get("subject") or name_id
    email = fields.get("email") or (name_id if "@" in name_id else None)
    fields["subject"] = subject
    fields["custom"] = custom
    return Identity(
        subject=subject,
        user_name=name_id,
        email=email,
        profile=fields,
        groups=tuple(dict.fromkeys(groups)),
        issuer=issuer,
    )


def find_user(dbsession, identity: Identity, match_on) -> User | None:
    for key in match_on:
        user = None
        if key == "subject" and identity.subject:
            user = dbsession.scalars(sa.select(User).where(User.idp_subject == identity.subject)).first()
        elif key == "userName" and identity.user_name:
            user = dbsession.scalars(sa.select(User).where(User.user_name_key == identity.user_name.lower())).first()
        elif key == "email" and identity.email:
            found = dbsession.scalars(sa.select(User).where(User.email_key == identity.email.lower()).limit(2)).all()
            # Email is not unique: two matches are ambiguous, so neither is taken.
            user = found[0] if len(found) == 1 else None
        if user is not None:
            return user
    return None


def user_as_dict(user: User | None) -> dict | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "userName": user.user_name,
        "externalId": user.external_id,
        "idp_subject": user.idp_subject,
        "active": user.active,
        "email": user.email,
        "displayName": user.display_name,
        "provisioned_by": user.provisioned_by,
    }


def fire(request, type_: str, user_id, user_name, *, reason: str = "", actor: str | None = None) -> None:
    request.registry.pm.hook.gateway_user_event(
        event=UserEvent(
            type=type_,
            user_id=user_id,
            user_name=user_name,
            actor=actor or (f"user:{user_name}" if user_name else "system"),
            source="saml",
            correlation_id=request.correlation_id,
            reason=reason,
            dbsession=request.dbsession,
        )
    )


def sign_in(request, identity: Identity) -> SignInResult:
    """Resolve the person, apply the provisioning decision, fire the events."""
    settings = request.registry.gateway_settings
    dbsession = request.dbsession
    user = find_user(dbsession, identity, settings.provisioning.match_on)
    decision = request.registry.pm.hook.gateway_provisioning_decide(
        identity=identity, user=user_as_dict(user), source="saml"
    )
    if decision is None:  # pragma: no cover - the shipped default always answers
        decision = Decision.deny("No provisioning policy answered.")
    name = user.user_name if user is not None else identity.user_name
    if decision.action == "deny":
        fire(request, "denied", user.id if user else None, name, reason=decision.reason)
        return SignInResult(user, decision)
    if user is not None and not user.active:
        # A policy may allow, but a deactivated user never gets a session.
        decision = Decision.deny("Your account is deactivated. Ask your administrator to reactivate it.")
        fire(request, "denied", user.id, name, reason=decision.reason)
        return SignInResult(user, decision)
    created = False
    if user is None:
        if decision.action != "create":
            decision = Decision.deny("You do not have an account here yet. Ask your administrator to add you.")
            fire(request, "denied", None, name, reason=decision.reason)
            return SignInResult(None, decision)
        user = _create(dbsession, identity)
        created = True
        fire(request, "created", user.id, user.user_name)
    elif identity.subject and not user.idp_subject:
        # A SCIM-provisioned user signing in for the first time: link the IdP subject.
        user.idp_subject = identity.subject
    user.last_sign_in_at = utcnow()
    dbsession.flush()
    fire(request, "signed_in", user.id, user.user_name)
    return SignInResult(user, decision, created)


def _create(dbsession, identity: Identity) -> User:
    profile = identity.profile
    user = User(
        user_name=identity.user_name,
        user_name_key=identity.user_name.lower(),
        idp_subject=identity.subject,
        active=True,
        display_name=profile.get("display_name"),
        given_name=profile.get("given_name"),
        family_name=profile.get("family_name"),
        email=identity.email,
        email_key=identity.email.lower() if identity.email else None,
        title=profile.get("title"),
        department=profile.get("department"),
        attributes=dict(profile.get("custom") or {}),
        scim_data={},
        provisioned_by="saml",
    )
    dbsession.add(user)
    dbsession.flush()
    return user
