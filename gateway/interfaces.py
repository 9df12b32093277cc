"""The value types that cross the plugin boundary.

Hooks receive and return these; an extension author needs nothing else from
the core's internals. They are plain frozen dataclasses so a plugin can build
them without importing Pyramid or SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
    empty (the development IdP uses this), or None. A site lays its own
    ``saml.claims.<field>`` settings over ``claim_map`` (gateway.saml.claims).

    There is no SCIM part: the SCIM server reads Entra's dialect (``"True"``
    strings, ``Replace`` ops, dotted PATCH keys, ...) for every client, with
    the schema at hand, and which client provisions is not tied to which IdP
    signs people in.
    """

    name: str
    label: str
    claim_map: Mapping[str, str]
    subject_claim: str | None = None
    metadata_url_pattern: str | None = None
    default_metadata: Callable[[Any], str | None] | None = None
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
    apply: Callable[[dict, TransformContext], dict]


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
    def allow(cls) -> Decision:
        return cls("allow")

    @classmethod
    def create(cls) -> Decision:
        return cls("create")

    @classmethod
    def deny(cls, reason: str) -> Decision:
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
class HookContext:
    """What a hook may need besides its subject, passed as ``context`` (never through thread-locals).

    ``registry`` is the Pyramid registry (``registry.pm``, and what your
    ``gateway_pyramid_configure`` put there); ``dbsession`` the SQLAlchemy
    session of the transaction the change is made in; ``request`` the Pyramid
    request, or None outside one (the ``gateway`` CLI).
    """

    registry: Any
    dbsession: Any = None
    request: Any = None

    @classmethod
    def of(cls, request) -> HookContext:
        return cls(request.registry, request.dbsession, request)

    @property
    def settings(self):
        """The parsed core settings (:class:`gateway.settings.Settings`)."""
        return self.registry.gateway_settings

    @property
    def ini(self) -> Mapping[str, str]:
        """The raw ``[app:main]`` settings, for keys under your plugin's prefix."""
        return self.registry.settings


@dataclass(frozen=True)
class UserEvent:
    """One lifecycle change of a user, passed to ``gateway_user_event``.

    ``type`` is one of :data:`EVENT_TYPES`; ``user_id`` the user's SCIM id
    (None for a refusal of somebody unknown); ``user_name`` their userName
    (or the name they tried); ``actor`` is ``scim:<token name>``,
    ``user:<userName>``, ``idp`` (single logout), ``admin:<userName>``,
    ``cli`` or ``system``; ``source`` is where the change came from:
    ``saml``, ``scim``, ``admin`` or ``cli``; ``correlation_id`` the
    request's id (None from the CLI);
    ``changed`` lists the profile fields an ``updated`` event touched (and is
    ``("sessions",)`` for a ``denied`` that ended the person's sessions);
    ``reason`` explains a ``denied`` event. The transaction's session is the
    hook's ``context.dbsession``, not part of the event.
    """

    type: str
    user_id: str | None
    user_name: str | None
    actor: str
    source: str
    correlation_id: str | None = None
    changed: tuple[str, ...] = ()
    reason: str = ""


GROUP_EVENT_TYPES = ("created", "updated", "deleted", "members_added", "members_removed")


@dataclass(frozen=True)
class GroupEvent:
    """One change of a group, passed to ``gateway_group_event`` and ``gateway_event_committed``.

    ``type`` is one of :data:`GROUP_EVENT_TYPES`; ``group_id`` the group's
    SCIM id; ``display_name`` its name (before a delete); ``user_ids`` the
    SCIM ids of the users a ``members_added`` or ``members_removed`` event
    concerns; ``changed`` the attributes an ``updated`` event touched;
    ``actor``, ``source`` and ``correlation_id`` as in :class:`UserEvent`.
    """

    type: str
    group_id: str
    display_name: str | None
    actor: str
    source: str
    correlation_id: str | None = None
    user_ids: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a :class:`PluginSetting` that must be set.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class PluginSetting:
    """One setting a plugin declares through ``gateway_plugin_settings``.

    ``name`` is the whole key, ``<prefix>.<name>`` under a prefix of the
    plugin's own (``acme.events_file``); a name ending in ``.*`` declares every
    key under it (``map_values.*``). ``parse`` turns the raw text into the
    value, raising ``ValueError("expected ...")`` for a bad one (the parsers of
    :mod:`gateway.settings` serve); ``default`` is the value when the key is
    absent or empty (:data:`REQUIRED`: it must be set); ``help`` is the line
    the configuration reference shows.
    """

    name: str
    parse: Callable[[str], Any] = str.strip
    default: Any = REQUIRED
    help: str = ""
