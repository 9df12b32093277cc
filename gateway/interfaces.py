"""The value types that cross the plugin boundary.

Hooks receive and return these; an extension author needs nothing else from
the core's internals. They are plain frozen dataclasses so a plugin can build
them without importing Pyramid or SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

#: The profile fields every IdP profile maps its claims onto.
PROFILE_FIELDS = (
    "subject",
    "email",
    "given_name",
    "family_name",
    "display_name",
    "tenant_id",
    "groups",
    "title",
    "department",
)


@dataclass(frozen=True)
class IdpProfile:
    """How one identity provider speaks SAML and SCIM.

    ``claim_map`` maps a SAML attribute name (claim URI) to a profile field
    from :data:`PROFILE_FIELDS`, or to ``custom.<name>`` for a custom
    attribute. ``subject_claim`` names the claim that identifies a person for
    good (Entra: the object identifier); when it is absent the NameID is used.
    ``metadata_url_pattern`` documents where the IdP publishes its metadata.
    ``default_metadata`` returns metadata XML when ``saml.idp_metadata`` is
    empty (the development IdP uses this), or None. ``scim_normalizer`` turns a
    SCIM request body in this IdP's dialect into standard RFC 7644 JSON.
    """

    name: str
    label: str
    claim_map: Mapping[str, str]
    subject_claim: str | None = None
    metadata_url_pattern: str | None = None
    default_metadata: Callable[[Any], str | None] | None = None
    scim_normalizer: Callable[[dict], dict] | None = None
    groups_overage_claim: str | None = None


@dataclass(frozen=True)
class StorageBackend:
    """A named SCIM storage backend.

    ``factory(registry)`` is called once at start-up and returns the object
    that implements :class:`gateway.scim.storage.ScimStorage`.
    """

    name: str
    factory: Callable[[Any], Any]


@dataclass(frozen=True)
class AttributeTransform:
    """A named transform of a person's profile.

    ``apply(profile, context)`` receives a copy of the profile dict (the
    fields of :data:`PROFILE_FIELDS` plus ``custom``: a dict of custom
    attributes) and returns the transformed dict. ``context`` is a
    :class:`TransformContext`.
    """

    name: str
    apply: Callable[[dict, "TransformContext"], dict]


@dataclass(frozen=True)
class TransformContext:
    """What a transform may need besides the profile itself."""

    source: Literal["saml", "scim"]
    settings: Mapping[str, str]  # the raw ini settings, for plugin-owned keys


@dataclass(frozen=True)
class Identity:
    """A person as the IdP (SAML) or the provisioning client (SCIM) describes them."""

    subject: str | None
    user_name: str | None
    email: str | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    issuer: str | None = None


@dataclass(frozen=True)
class Decision:
    """The answer of ``gateway_provisioning_decide``.

    ``action`` is ``allow`` (sign in an existing user / accept the SCIM write),
    ``create`` (create the user first), or ``deny`` with a ``reason`` shown to
    the person (or returned as the SCIM error detail).
    """

    action: Literal["allow", "create", "deny"]
    reason: str = ""

    @classmethod
    def allow(cls) -> "Decision":
        return cls("allow")

    @classmethod
    def create(cls) -> "Decision":
        return cls("create")

    @classmethod
    def deny(cls, reason: str) -> "Decision":
        return cls("deny", reason)


EVENT_TYPES = (
    "created",
    "updated",
    "deactivated",
    "reactivated",
    "deleted",
    "signed_in",
    "signed_out",
    "denied",
)


@dataclass(frozen=True)
class UserEvent:
    """One lifecycle change of a user, passed to ``gateway_user_event``.

    ``actor`` is ``scim:<token name>``, ``user:<userName>`` or ``system``;
    ``changed`` lists the profile fields an ``updated`` event touched;
    ``reason`` explains a ``denied`` event.
    """

    type: str
    user_id: str | None
    user_name: str | None
    actor: str
    source: str
    correlation_id: str | None = None
    changed: tuple[str, ...] = ()
    reason: str = ""
    dbsession: Any = None  # the request's SQLAlchemy session, to write in the same transaction
