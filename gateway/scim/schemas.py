"""What this SCIM server supports, as data: the schemas, resource types and
service provider configuration it publishes, and attribute-name resolution.

The same definitions drive ``/Schemas`` and the server's behaviour (which
attributes a filter, a PATCH path or ``attributes=`` may name; which are
read-only, case-exact, boolean or multi-valued), so what ``/Schemas`` says is
what the server does. Attribute names are case-insensitive (RFC 7643 §2.1);
they are resolved to the spelling below and stored in that spelling, while
values are stored exactly as sent.

A configured custom extension (``scim.custom_schemas``) is *open*: Entra
names custom attributes only in its attribute mappings, never in a schema we
could read, so every attribute under the URN is accepted, stored and
returned as sent (single values: strings, numbers, booleans).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str = "string"  # string boolean decimal integer dateTime reference complex binary
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    description: str = ""
    sub_attributes: tuple[Attribute, ...] = ()
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    #: Open attributes come from custom extensions: any JSON scalar is kept.
    open: bool = False

    @cached_property
    def _subs(self) -> dict[str, Attribute]:
        # Built once per (immutable) attribute: lookups run for every value of every request.
        out: dict[str, Attribute] = {}
        for attribute in self.sub_attributes:
            out.setdefault(attribute.name.lower(), attribute)
        return out

    def sub(self, name: str) -> Attribute | None:
        return self._subs.get(name.lower())

    @property
    def read_only(self) -> bool:
        return self.mutability == "readOnly"

    def to_scim(self) -> dict:
        out = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.canonical_values:
            out["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            out["subAttributes"] = [a.to_scim() for a in self.sub_attributes]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...] = ()
    #: Custom extensions accept any attribute name (see the module docstring).
    open: bool = False

    @cached_property
    def _by_name(self) -> dict[str, Attribute]:
        out: dict[str, Attribute] = {}
        for attribute in self.attributes:
            out.setdefault(attribute.name.lower(), attribute)
        return out

    def find(self, name: str) -> Attribute | None:
        found = self._by_name.get(name.lower())
        if found is not None:
            return found
        if self.open and name and not name.startswith("$"):
            return Attribute(name=name, type="string", open=True, description="custom attribute, stored as sent")
        return None

    def to_scim(self, base_url: str) -> dict:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.id}"},
        }


def _plural(
    name: str, value_type: str = "string", types: tuple[str, ...] = ("work", "home", "other"), **value_kw
) -> Attribute:
    """A multi-valued complex attribute with RFC 7643's value/display/type/primary."""
    return Attribute(
        name,
        type="complex",
        multi_valued=True,
        sub_attributes=(
            Attribute("value", type=value_type, **value_kw),
            Attribute("display"),
            Attribute("type", canonical_values=types),
            Attribute("primary", type="boolean"),
        ),
    )


ID = Attribute(
    "id",
    case_exact=True,
    mutability="readOnly",
    returned="always",
    uniqueness="server",
    description="Server-assigned id",
)
EXTERNAL_ID = Attribute("externalId", case_exact=True, description="The provisioning client's id for the resource")
META = Attribute(
    "meta",
    type="complex",
    mutability="readOnly",
    sub_attributes=(
        Attribute("resourceType", case_exact=True, mutability="readOnly"),
        Attribute("created", type="dateTime", mutability="readOnly"),
        Attribute("lastModified", type="dateTime", mutability="readOnly"),
        Attribute("location", type="reference", case_exact=True, mutability="readOnly", reference_types=("uri",)),
        Attribute("version", case_exact=True, mutability="readOnly"),
    ),
)
COMMON = (ID, EXTERNAL_ID, META)

USER_SCHEMA = Schema(
    CORE_USER,
    "User",
    "User Account",
    (
        Attribute("userName", required=True, uniqueness="server", description="Unique identifier, usually the UPN"),
        Attribute(
            "name",
            type="complex",
            sub_attributes=tuple(
                Attribute(n)
                for n in ("formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix")
            ),
        ),
        Attribute("displayName"),
        Attribute("nickName"),
        Attribute("profileUrl", type="reference", reference_types=("external",)),
        Attribute("title"),
        Attribute("userType"),
        Attribute("preferredLanguage"),
        Attribute("locale"),
        Attribute("timezone"),
        Attribute("active", type="boolean"),
        _plural("emails"),
        _plural("phoneNumbers", types=("work", "home", "mobile", "fax", "pager", "other")),
        _plural("ims", types=("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
        _plural("photos", value_type="reference", types=("photo", "thumbnail"), reference_types=("external",)),
        Attribute(
            "addresses",
            type="complex",
            multi_valued=True,
            sub_attributes=tuple(
                Attribute(n) for n in ("formatted", "streetAddress", "locality", "region", "postalCode", "country")
            )
            + (Attribute("type", canonical_values=("work", "home", "other")), Attribute("primary", type="boolean")),
        ),
        _plural("entitlements", types=()),
        _plural("roles", types=()),
        _plural("x509Certificates", value_type="binary", types=()),
    ),
)

ENTERPRISE_SCHEMA = Schema(
    ENTERPRISE_USER,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attribute("employeeNumber"),
        Attribute("costCenter"),
        Attribute("organization"),
        Attribute("division"),
        Attribute("department"),
        Attribute(
            "manager",
            type="complex",
            sub_attributes=(
                Attribute("value", case_exact=True, description="The manager's id"),
                Attribute("$ref", type="reference", case_exact=True, reference_types=("User",)),
                Attribute("displayName", mutability="readOnly"),
            ),
        ),
    ),
)

GROUP_SCHEMA = Schema(
    CORE_GROUP,
    "Group",
    "Group",
    (
        Attribute("displayName", required=True, uniqueness="server", description="Unique, case-insensitively"),
        Attribute(
            "members",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("value", case_exact=True, mutability="immutable", description="A user's id"),
                Attribute("$ref", type="reference", case_exact=True, mutability="immutable", reference_types=("User",)),
                Attribute("type", mutability="immutable", canonical_values=("User",)),
            ),
        ),
    ),
)


def custom_schema(urn: str) -> Schema:
    return Schema(
        urn,
        urn.rsplit(":", 1)[-1] or "Custom",
        "Custom extension: every attribute under this URN is stored and returned as sent",
        (),
        open=True,
    )


@dataclass(frozen=True)
class ResolvedPath:
    """An attribute path resolved against a resource type's schemas."""

    schema: Schema
    attribute: Attribute
    sub: Attribute | None = None

    @property
    def urn(self) -> str | None:
        """The extension URN, or None for a core attribute."""
        return None if self.schema.id in (CORE_USER, CORE_GROUP) else self.schema.id

    @property
    def leaf(self) -> Attribute:
        return self.sub or self.attribute

    def text(self) -> str:
        name = self.attribute.name + (f".{self.sub.name}" if self.sub else "")
        return f"{self.urn}:{name}" if self.urn else name


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    core: Schema
    extensions: tuple[Schema, ...] = ()
    common: tuple[Attribute, ...] = field(default=COMMON)

    @property
    def schemas(self) -> tuple[Schema, ...]:
        return (self.core, *self.extensions)

    @cached_property
    def _extensions(self) -> dict[str, Schema]:
        out: dict[str, Schema] = {}
        for schema in self.extensions:
            out.setdefault(schema.id.lower(), schema)
        return out

    @cached_property
    def _common(self) -> dict[str, Attribute]:
        out: dict[str, Attribute] = {}
        for attribute in self.common:
            out.setdefault(attribute.name.lower(), attribute)
        return out

    def extension(self, urn: str) -> Schema | None:
        return self._extensions.get(urn.lower())

    def top(self, name: str) -> tuple[Schema, Attribute] | None:
        """A core or common attribute by (case-insensitive) name."""
        found = self._common.get(name.lower()) or self.core.find(name)
        return (self.core, found) if found else None

    def resolve(self, text: str) -> ResolvedPath | None:
        """``userName``, ``name.givenName``, ``urn:...:User:department`` or
        ``urn:...:User:manager.value`` to a :class:`ResolvedPath`; None if unknown.

        A URN-qualified path is split at the schema URN, never at the dots
        inside it (``2.0``), as Entra's extension paths require.
        """
        schema: Schema | None = self.core
        rest = text
        if text.lower().startswith("urn:"):
            schema = None
            for candidate in sorted(self.schemas, key=lambda s: -len(s.id)):
                prefix = candidate.id.lower() + ":"
                if text.lower().startswith(prefix):
                    schema, rest = candidate, text[len(prefix) :]
                    break
            if schema is None:
                return None
        name, _, sub_name = rest.partition(".")
        if schema is self.core:
            found = self.top(name)
            if not found:
                return None
            attribute = found[1]
        else:
            attribute = schema.find(name)
            if attribute is None:
                return None
        sub = None
        if sub_name:
            sub = attribute.sub(sub_name)
            if sub is None:
                return None
        return ResolvedPath(schema, attribute, sub)

    def to_scim(self, base_url: str) -> dict:
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.core.description,
            "schema": self.core.id,
            "schemaExtensions": [{"schema": s.id, "required": False} for s in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{self.name}"},
        }


def resource_types(custom_urns: Iterable[str]) -> dict[str, ResourceType]:
    extensions = (ENTERPRISE_SCHEMA, *(custom_schema(u) for u in custom_urns))
    return {
        "User": ResourceType("User", "/Users", USER_SCHEMA, extensions),
        "Group": ResourceType("Group", "/Groups", GROUP_SCHEMA),
    }


def service_provider_config(base_url: str, max_page_size: int) -> dict:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/entra-identity-gateway#scim-provisioning-with-microsoft-entra-id",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_page_size},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A token made with `gateway CONFIG token create NAME`, sent as Authorization: Bearer",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }
