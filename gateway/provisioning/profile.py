"""The one mapped profile: SAML claims and SCIM data merged, transformed, stored.

Both writers of a person's profile come through here: a SAML sign-in
(:func:`sync_profile_from_saml`, called by ``signin.py``) and a SCIM write
(:func:`sync_profile_from_scim`, called by the SCIM service). Each source's
own copy is kept as it arrived (``users.scim_data`` as SCIM sent it,
``users.saml_profile`` as the last sign-in's claims mapped it), and the
mapped profile in the ``users`` columns (display name, names, email, title,
department, ``attributes`` for the custom ones) is recomputed from both:

1. the authority's non-empty values win and the other source fills the
   fields the authority leaves empty (``attributes.authority``; ``auto`` is
   SCIM for users SCIM created, SAML for users created at sign-in);
2. the transforms named in ``attributes.transforms`` run, in that order.

Recomputing from the two sources instead of patching the previous result
means the outcome does not depend on which source spoke last, a value a
source stops sending falls back to the other source, and a transform that
is idempotent (all the shipped ones are) gives the same result every time.
``/``, ``/whoami`` and forward-auth read the columns, so they show exactly
this profile.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
import zope.sqlalchemy

from ..db.models import User
from ..errors import ConfigError
from ..interfaces import AttributeTransform, Identity, TransformContext
from ..plugins import collect

log = logging.getLogger(__name__)

ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

#: The profile fields stored in ``users`` columns, with their column lengths.
STORED_FIELDS: dict[str, int] = {
    "display_name": 512,
    "given_name": 256,
    "family_name": 256,
    "email": 320,
    "title": 256,
    "department": 256,
}

#: Enterprise extension attributes that become custom profile attributes
#: (``department`` is a profile field of its own).
ENTERPRISE_CUSTOM = ("employeeNumber", "costCenter", "organization", "division")


# ------------------------------------------------------------------ sources


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None or isinstance(value, (dict, bool)):
        return None
    value = str(value).strip()
    return value or None


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def primary_email(data: Mapping) -> str | None:
    """The work email of a SCIM user (Entra maps ``mail`` there), else the primary, else the first.

    The same choice as the shipped storage makes for its ``email`` column, so
    that recomputing the profile after a SCIM write usually changes nothing.
    """
    emails = [e for e in data.get("emails") or [] if isinstance(e, dict) and _text(e.get("value"))]
    for wanted in (lambda e: str(e.get("type", "")).lower() == "work", lambda e: e.get("primary") is True):
        for email in emails:
            if wanted(email):
                return _text(email["value"])
    return _text(emails[0]["value"]) if emails else None


def profile_from_scim(data: Mapping | None) -> dict:
    """The profile fields of a SCIM user resource (as stored: as Entra sent it).

    Custom attributes are the enterprise extension's employeeNumber,
    costCenter, organization, division and manager (its id), and every
    attribute of a configured custom extension (``scim.custom_schemas``),
    under its bare name: the same name a SAML claim maps with ``custom.<name>``.
    """
    data = data or {}
    name = data.get("name") if isinstance(data.get("name"), dict) else {}
    enterprise = data.get(ENTERPRISE_USER) if isinstance(data.get(ENTERPRISE_USER), dict) else {}
    custom: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("urn:") and key != ENTERPRISE_USER and isinstance(value, dict):
            custom.update({k: v for k, v in value.items() if _present(v)})
    for key in ENTERPRISE_CUSTOM:
        if _present(enterprise.get(key)):
            custom[key] = enterprise[key]
    manager = enterprise.get("manager")
    if isinstance(manager, dict) and _text(manager.get("value")):
        custom["manager"] = manager["value"]
    return {
        "display_name": _text(data.get("displayName")),
        "given_name": _text(name.get("givenName")),
        "family_name": _text(name.get("familyName")),
        "email": primary_email(data),
        "title": _text(data.get("title")),
        "department": _text(enterprise.get("department")),
        "custom": custom,
    }


def profile_from_saml(identity: Identity) -> dict:
    """The profile fields of a verified sign-in, as the IdP profile's claim map put them."""
    claims = identity.profile or {}
    out = {name: _text(claims.get(name)) for name in STORED_FIELDS}
    out["email"] = _text(identity.email) or out["email"]
    out["custom"] = {k: v for k, v in dict(claims.get("custom") or {}).items() if _present(v)}
    return out


def scim_resource_from_saml(identity: Identity) -> dict:
    """The SCIM resource of a person created at their first sign-in: userName and active only.

    Stored as ``scim_data`` so that, when Entra starts provisioning them, its
    ``GET /Users?filter=userName eq "..."`` finds this very record (and then
    PATCHes the attributes it maps) instead of POSTing a twin. No profile
    field is copied in: ``scim_data`` is SCIM's word, and a copy of the claims
    there would outlive the claims as a second, stale source.
    """
    return {"userName": identity.user_name, "active": True}


# ------------------------------------------------------------------ merging


def authority(settings, provisioned_by: str | None) -> str:
    """``scim`` or ``saml``: whose values win for a user (``attributes.authority``)."""
    chosen = settings.attributes.authority
    if chosen != "auto":
        return chosen
    return "scim" if provisioned_by == "scim" else "saml"


def merge(primary: Mapping, secondary: Mapping) -> dict:
    """Field by field: the primary source's value, else the secondary's."""
    out: dict[str, Any] = {name: _text(primary.get(name)) or _text(secondary.get(name)) for name in STORED_FIELDS}
    custom = {k: v for k, v in dict(secondary.get("custom") or {}).items() if _present(v)}
    custom.update({k: v for k, v in dict(primary.get("custom") or {}).items() if _present(v)})
    out["custom"] = custom
    return out


# ------------------------------------------------------------------ transforms


def build_transforms(registry) -> tuple[AttributeTransform, ...]:
    """The transforms ``attributes.transforms`` names, in its order; unknown names stop start-up."""
    registered = collect(registry.pm.hook.gateway_attribute_transforms(), "attribute transform")
    chosen = []
    for name in registry.gateway_settings.attributes.transforms:
        if name not in registered:
            known = ", ".join(sorted(registered)) or "none"
            raise ConfigError(
                f'attributes.transforms: no enabled plugin registers the transform "{name}"'
                f" (registered: {known}); enable the plugin that provides it in gateway.plugins"
                " (the shipped ones are in the plugin transforms)"
            )
        chosen.append(registered[name])
    return tuple(chosen)


def transforms(registry) -> tuple[AttributeTransform, ...]:
    found = getattr(registry, "attribute_transforms", None)
    if found is None:
        found = registry.attribute_transforms = build_transforms(registry)
    return found


def apply_transforms(
    registry, profile: dict, source: str, context_fields: Mapping | None = None, steps: list | None = None
) -> dict:
    """Run the configured transforms over a copy of ``profile``, in order.

    A transform sees the stored fields, ``custom``, and read-only context
    (``subject``, ``tenant_id``, ``groups``); only the stored fields and
    ``custom`` of its answer are kept. ``steps``, when given, receives
    (transform name, the profile as kept after it) for each transform: the
    test sign-in's report shows them in order.
    """
    chain = transforms(registry)
    if not chain:
        return profile
    value = {"subject": None, "tenant_id": None, "groups": (), **dict(context_fields or {}), **copy.deepcopy(profile)}
    context = TransformContext(source=source, settings=registry.settings)
    for transform in chain:
        result = transform.apply(value, context)
        if not isinstance(result, dict):
            raise TypeError(f'attribute transform "{transform.name}" returned {type(result).__name__}, not a dict')
        value = result
        if steps is not None:
            steps.append((transform.name, copy.deepcopy(_kept(value))))
    return _kept(value)


def _kept(value: Mapping) -> dict:
    """What of a transform's answer becomes the profile: the stored fields and ``custom``."""
    out = {name: _text(value.get(name)) for name in STORED_FIELDS}
    out["custom"] = {k: v for k, v in dict(value.get("custom") or {}).items() if _present(v)}
    return out


def mapped_profile(registry, *, provisioned_by, scim_data, saml_profile, source, context_fields=None) -> dict:
    """The profile a user shows: both sources merged by authority, then transformed."""
    scim = profile_from_scim(scim_data)
    saml = dict(saml_profile or {})
    if authority(registry.gateway_settings, provisioned_by) == "scim":
        merged = merge(scim, saml)
    else:
        merged = merge(saml, scim)
    return apply_transforms(registry, merged, source, context_fields)


# ------------------------------------------------------------------ storing


def current_profile(user: User) -> dict:
    out = {name: getattr(user, name) for name in STORED_FIELDS}
    out["custom"] = dict(user.attributes or {})
    return out


def changed_fields(old: Mapping, new: Mapping) -> tuple[str, ...]:
    """Field names that differ; custom attributes as ``custom.<name>``."""
    changed = [name for name in STORED_FIELDS if old.get(name) != new.get(name)]
    old_custom, new_custom = dict(old.get("custom") or {}), dict(new.get("custom") or {})
    changed += [
        f"custom.{k}" for k in sorted(set(old_custom) | set(new_custom)) if old_custom.get(k) != new_custom.get(k)
    ]
    return tuple(changed)


def store(user: User, profile: Mapping) -> tuple[str, ...]:
    """Write the mapped profile to the user's columns; return what changed.

    Only changed columns are assigned, so an unchanged profile writes nothing
    (and wakes no identity cache on other instances).
    """
    before = current_profile(user)
    for name, limit in STORED_FIELDS.items():
        value = profile.get(name)
        value = value[:limit] if isinstance(value, str) else None
        if getattr(user, name) != value:
            setattr(user, name, value)
    email_key = user.email.lower() if user.email else None
    if user.email_key != email_key:
        user.email_key = email_key
    custom = dict(profile.get("custom") or {})
    if dict(user.attributes or {}) != custom:
        user.attributes = custom
    return changed_fields(before, current_profile(user))


def _context_fields(user: User, identity: Identity | None = None) -> dict:
    fields: dict[str, Any] = {"subject": user.idp_subject}
    if identity is not None:
        fields.update(
            subject=identity.subject, tenant_id=(identity.profile or {}).get("tenant_id"), groups=identity.groups
        )
    return fields


def sync_profile_from_saml(request, user: User, identity: Identity) -> tuple[str, ...]:
    """A verified sign-in's claims reach the profile; return the changed field names."""
    saml = profile_from_saml(identity)
    if user.saml_profile != saml:
        user.saml_profile = saml
    profile = mapped_profile(
        request.registry,
        provisioned_by=user.provisioned_by,
        scim_data=user.scim_data,
        saml_profile=saml,
        source="saml",
        context_fields=_context_fields(user, identity),
    )
    return store(user, profile)


#: What a SCIM-side sync reads: one row by primary key, no ORM object.
_SCIM_SYNC_READ = sa.select(
    User.provisioned_by,
    User.saml_profile,
    User.idp_subject,
    User.email_key,
    User.attributes,
    *(getattr(User, name) for name in STORED_FIELDS),
).where(User.id == sa.bindparam("user_id"))

#: The columns of that read: what ``stored=`` must hold.
SCIM_SYNC_COLUMNS = tuple(c.key for c in _SCIM_SYNC_READ.selected_columns)


def profile_columns(profile: Mapping) -> dict:
    """The ``users`` column values that hold a mapped profile (lengths cut,
    ``email_key``, custom attributes in ``attributes``): what
    :func:`sync_profile_from_scim` writes. A backend creating a SCIM user in
    the ``users`` table can insert these, and the sync then writes nothing."""
    values: dict[str, Any] = {}
    for name, limit in STORED_FIELDS.items():
        value = profile.get(name)
        values[name] = value[:limit] if isinstance(value, str) else None
    values["email_key"] = values["email"].lower() if values["email"] else None
    values["attributes"] = dict(profile.get("custom") or {})
    return values


def sync_profile_from_scim(
    request, user_id: str, data: Mapping, old_data: Mapping | None = None, stored: Mapping | None = None
) -> tuple[str, ...]:
    """Recompute a user's mapped profile after a SCIM create or write.

    Call it after the storage backend stored ``data`` (the user's full SCIM
    resource) in this transaction; ``old_data`` is the resource before the
    write (None for a create). Returns the mapped profile's changed field
    names (``display_name``, ``custom.costCenter``, ...), for the ``updated``
    event. The user's ``users`` row is there whatever the backend: it writes
    the row itself, or the core mirrors its write (gateway.scim.directory).

    Cost: one primary-key SELECT, and one UPDATE only when the mapped profile
    differs from the columns (transforms, or SAML filling a gap). ``stored``:
    the row's :data:`SCIM_SYNC_COLUMNS` as the backend just wrote them in this
    transaction (``Record.stored_profile``; only a backend that keeps the
    directory can know them), which saves the SELECT.
    """
    dbsession = request.dbsession
    if stored is not None:
        row = SimpleNamespace(**{name: stored[name] for name in SCIM_SYNC_COLUMNS})
    else:
        row = dbsession.execute(_SCIM_SYNC_READ, {"user_id": user_id}).first()
    if row is None:
        return ()
    registry = request.registry
    common = {"provisioned_by": row.provisioned_by, "saml_profile": row.saml_profile, "source": "scim"}
    context = {"subject": row.idp_subject}
    new = mapped_profile(registry, scim_data=data, context_fields=context, **common)
    values: dict[str, Any] = {}
    for name, limit in STORED_FIELDS.items():
        value = new.get(name)
        value = value[:limit] if isinstance(value, str) else None
        if getattr(row, name) != value:
            values[name] = value
    email = values.get("email", row.email)
    if row.email_key != (email.lower() if email else None):
        values["email_key"] = email.lower() if email else None
    if dict(row.attributes or {}) != new["custom"]:
        values["attributes"] = new["custom"]
    if values:
        dbsession.execute(
            sa.update(User).where(User.id == user_id).values(**values),
            execution_options={"synchronize_session": False},
        )
        zope.sqlalchemy.mark_changed(dbsession)
    old = mapped_profile(registry, scim_data=old_data, context_fields=context, **common) if old_data is not None else {}
    return changed_fields(old, new)
