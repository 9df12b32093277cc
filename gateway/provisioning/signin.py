"""Who a verified SAML sign-in is: find the user, ask the policy, create or update, fire events.

The lookup order is ``provisioning.match_on`` (default: the IdP's lasting
subject against the stored IdP subject or externalId, then userName, then
email, case-insensitively), so a user that SCIM created before their first
sign-in is found rather than duplicated, and their IdP subject is linked on
that first match so later sign-ins match on it alone.

A name or email match never takes over a record already linked to another
subject: Entra reuses a UPN once its owner is deleted, and the new owner
must not inherit the old one's account. Such a sign-in is refused with a
reason and an admin decides.

Every sign-in also carries the claims to the mapped profile (profile.py),
the ``groups`` claim to the memberships in ``first_login``-only mode and the
admin flag from ``gateway.admin_groups`` (groups.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import transaction.interfaces
from sqlalchemy.orm import make_transient_to_detached

from ..db.models import User, new_id, utcnow
from ..db.prepared import Prepared, session_connection
from ..events import fire_user
from ..interfaces import Decision, HookContext, Identity, UserEvent
from .groups import Membership, announce_claim_groups, memberships, refresh_admin, sync_groups_from_claims
from .policy import DEACTIVATED
from .profile import profile_from_saml, scim_resource_from_saml, sync_profile_from_saml

log = logging.getLogger(__name__)

SUBJECT_TAKEN = (
    "An account with your user name or email belongs to another person in your directory."
    " Ask your administrator to sort out the two accounts."
)
NO_ACCOUNT = "You do not have an account here yet. Ask your administrator to add you."


@dataclass(frozen=True)
class SignInResult:
    user: User | None
    decision: Decision
    created: bool = False


def identity_from_claims(
    profile, name_id: str, attributes: dict[str, list[str]], issuer: str | None = None
) -> Identity:
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
    overage = getattr(profile, "groups_overage_claim", None)
    if overage and attributes.get(overage):
        # Entra replaced the groups claim: see groups.OVERAGE_WARNING.
        fields["groups_link"] = attributes[overage][0]
    return Identity(
        subject=subject,
        user_name=name_id,
        email=email,
        profile=fields,
        groups=tuple(dict.fromkeys(groups)),
        issuer=issuer,
    )


@dataclass(frozen=True)
class Match:
    user: User | None
    #: A user found by userName/email who is linked to another subject.
    taken: User | None = None


def _linkable(user: User, identity: Identity) -> bool:
    return not user.idp_subject or not identity.subject or user.idp_subject == identity.subject


def find_user(dbsession, identity: Identity, match_on) -> Match:
    """The stored user this sign-in is, by ``match_on`` order."""
    taken = None
    for key in match_on:
        candidates: list[User] = []
        if key == "subject" and identity.subject:
            found = _users(dbsession, _BY_SUBJECT, subject=identity.subject)
            if found:
                return Match(found[0])
            # Entra can map objectId to SCIM externalId: a provisioned user
            # not yet linked is found by it too.
            candidates = _users(dbsession, _BY_EXTERNAL_ID, id=identity.subject, lower=identity.subject.lower())
        elif key == "userName" and identity.user_name:
            candidates = _users(dbsession, _BY_USER_NAME, key=identity.user_name.lower())
        elif key == "email" and identity.email:
            candidates = _users(dbsession, _BY_EMAIL, key=identity.email.lower())
        # Two matches are ambiguous (email is not unique), so neither is taken.
        if len(candidates) == 1:
            if _linkable(candidates[0], identity):
                return Match(candidates[0])
            taken = taken or candidates[0]
    return Match(None, taken)


#: Every column of a user, named as the attribute that holds it (the row becomes ``User(**row)``).
_USER_ROW = sa.select(
    *(getattr(User, attribute.key).label(attribute.key) for attribute in sa.inspect(User).column_attrs)
)
_BY_SUBJECT = Prepared(_USER_ROW.where(User.idp_subject == sa.bindparam("subject")))
_BY_EXTERNAL_ID = Prepared(
    _USER_ROW.where(
        sa.or_(User.external_id == sa.bindparam("id"), User.external_id == sa.bindparam("lower")),
        User.idp_subject.is_(None),
    ).limit(2)
)
_BY_USER_NAME = Prepared(_USER_ROW.where(User.user_name_key == sa.bindparam("key")))
_BY_EMAIL = Prepared(_USER_ROW.where(User.email_key == sa.bindparam("key")).limit(2))


def _users(dbsession, statement: Prepared, **values) -> list[User]:
    """The users ``statement`` finds, read with a prebuilt SELECT and handed to
    the session as if its ORM query had loaded them, so changes to them are
    flushed as usual (a sign-in's look-up, without the ORM's query work)."""
    if dbsession.autoflush:
        dbsession.flush()  # what the ORM's query would have done first
    users = []
    for row in statement.rows(session_connection(dbsession), values):
        fields = row._asdict()
        user = dbsession.identity_map.get(dbsession.identity_key(User, fields["id"]))
        if user is None:
            user = User(**fields)
            make_transient_to_detached(user)
            dbsession.add(user)
        users.append(user)
    return users


def user_groups(dbsession, user_id: str, current: list[Membership] | None = None) -> list[str]:
    """Display names and external ids of the user's groups (for policy plugins).

    ``current``: the user's groups as :func:`groups.memberships` read them, instead of a query.
    """
    if current is None:
        current = memberships(dbsession, user_id)
    return sorted({value for g in current for value in (g.display_name, g.external_id) if value})


def user_as_dict(user: User | None, dbsession=None, current: list[Membership] | None = None) -> dict | None:
    if user is None:
        return None
    out = {
        "id": user.id,
        "userName": user.user_name,
        "externalId": user.external_id,
        "idp_subject": user.idp_subject,
        "active": user.active,
        "email": user.email,
        "displayName": user.display_name,
        "givenName": user.given_name,
        "familyName": user.family_name,
        "title": user.title,
        "department": user.department,
        "provisioned_by": user.provisioned_by,
    }
    if dbsession is not None:
        out["groups"] = user_groups(dbsession, user.id, current)
    return out


def fire(
    request,
    type_: str,
    user_id,
    user_name,
    *,
    reason: str = "",
    actor: str | None = None,
    changed: tuple[str, ...] = (),
    source: str = "saml",
) -> None:
    fire_user(
        HookContext.of(request),
        UserEvent(
            type=type_,
            user_id=user_id,
            user_name=user_name,
            actor=actor or (f"user:{user_name}" if user_name else "system"),
            source=source,
            correlation_id=request.correlation_id,
            changed=tuple(changed),
            reason=reason,
        ),
    )


def _deny(request, user: User | None, name: str | None, reason: str) -> SignInResult:
    from ..saml.traces import note_user

    # The refusal's trace shows on this user's page in the console.
    note_user(request, user.id if user else None, name)
    fire(request, "denied", user.id if user else None, name, reason=reason)
    return SignInResult(user, Decision.deny(reason))


def sign_in(request, identity: Identity) -> SignInResult:
    """Resolve the person, apply the provisioning decision, sync, fire the events."""
    settings = request.registry.gateway_settings
    dbsession = request.dbsession
    match = find_user(dbsession, identity, settings.provisioning.match_on)
    user = match.user
    name = user.user_name if user is not None else identity.user_name
    if user is None and match.taken is not None:
        log.warning(
            "sign-in refused: %s matches user %s, who is linked to another IdP subject (subject=%s) correlation_id=%s",
            identity.user_name,
            match.taken.user_name,
            identity.subject,
            request.correlation_id,
        )
        return _deny(request, match.taken, match.taken.user_name, SUBJECT_TAKEN)
    # The user's groups, read once for the policy, the claim sync and the admin flag.
    current = memberships(dbsession, user.id) if user is not None else []
    decision = request.registry.pm.hook.gateway_provisioning_decide(
        context=HookContext.of(request), identity=identity, user=user_as_dict(user, dbsession, current), source="saml"
    )
    if decision is None:  # pragma: no cover - the shipped default always answers
        decision = Decision.deny("No provisioning policy answered.")
    if decision.action == "deny":
        return _deny(request, user, name, decision.reason)
    if user is not None and not user.active:
        # A policy may allow, but a deactivated user never gets a session.
        return _deny(request, user, name, DEACTIVATED)
    created = user is None
    if created:
        if decision.action != "create":
            return _deny(request, None, name, NO_ACCOUNT)
        user = _new_user(request, identity)
    elif identity.subject and not user.idp_subject:
        # A SCIM-provisioned user signing in for the first time: link the
        # subject so later sign-ins match on it alone, whatever their UPN becomes.
        user.idp_subject = identity.subject
    changed = sync_profile_from_saml(request, user, identity)
    now = utcnow()
    if created:
        # One INSERT with the profile; the memberships below need the row.
        user.last_sign_in_at = now
        _store_new(dbsession, user)
    groups = sync_groups_from_claims(request, user, identity, current)
    # Unchanged memberships decide the admin flag without a query.
    if refresh_admin(request, user, None if groups else current):
        changed += ("is_admin",)
    if dbsession.is_modified(user):
        user.last_sign_in_at = now
        dbsession.flush()
    elif not created:
        # Nothing else changed (most sign-ins): one prebuilt UPDATE, not the ORM's unit of work.
        _SIGNED_IN.execute(session_connection(dbsession, write=True), {"id": user.id, "now": now})
    if created:
        fire(request, "created", user.id, user.user_name)
    elif changed:
        fire(request, "updated", user.id, user.user_name, changed=changed)
    announce_claim_groups(request, user, groups)
    fire(request, "signed_in", user.id, user.user_name)
    return SignInResult(user, decision, created)


_SIGNED_IN = Prepared(
    sa.update(User)
    .where(User.id == sa.bindparam("id"))
    .values(last_sign_in_at=sa.bindparam("now"), updated_at=sa.bindparam("now"))
)


def _new_user(request, identity: Identity) -> User:
    """A new user from the claims, not yet stored: the mapped profile is filled by the sync that follows.

    A SCIM backend that keeps its data outside the core's tables stores the
    user's SCIM resource too, and gives the id (gateway.scim.directory): so
    Entra's ``userName eq`` lookup finds this very user instead of creating a twin.
    """
    from ..scim.directory import create_user_in_backend

    email = profile_from_saml(identity)["email"]
    data = scim_resource_from_saml(identity)
    return User(
        id=create_user_in_backend(request, data) or new_id(),
        user_name=identity.user_name,
        user_name_key=identity.user_name.lower(),
        idp_subject=identity.subject,
        active=True,
        email=email,
        email_key=email.lower() if email else None,
        attributes={},
        scim_data=data,
        provisioned_by="saml",
        is_admin=False,
    )


def _store_new(dbsession, user: User) -> None:
    dbsession.add(user)
    try:
        dbsession.flush()
    except sa.exc.IntegrityError as exc:
        # Two first sign-ins of one person at once (PostgreSQL; SQLite runs them
        # one after the other): the other one created the user first. The request
        # runs again (pyramid_retry) and finds that user.
        raise transaction.interfaces.TransientError("the user was created by a concurrent sign-in") from exc
