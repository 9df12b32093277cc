"""Incoming resources to stored data, stored data to SCIM JSON.

Input is checked against the published schemas and kept as sent: attribute
*names* are put in their canonical spelling (SCIM names are
case-insensitive), values are not transformed, except where Entra's dialect
needs a reading: ``"True"``/``"False"`` for booleans, ``null`` for "not sent",
``manager`` as a plain id, ``{"value": id}`` or ``[{"value": id}]``.
An attribute the server does not know is a 400 ``invalidValue``, never
silently dropped; read-only attributes are ignored as RFC 7644 §3.3 says.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from .errors import bad_request
from .schemas import CORE_GROUP, CORE_USER, Attribute, ResourceType
from .storage import Record

READ_ONLY_TOP = ("id", "meta", "schemas")


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def etag(version: int) -> str:
    return f'W/"{version}"'


# ------------------------------------------------------------------ coercion


def coerce_scalar(attribute: Attribute, value: Any, where: str) -> Any:
    kind = attribute.type
    if attribute.open:
        if isinstance(value, (dict, list)) and not (
            isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)
        ):
            raise bad_request("invalidValue", f'"{where}" is a custom attribute: send a string, number or boolean')
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        # Entra sends "True"/"False" (and "true"/"false") without aadOptscim062020.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise bad_request("invalidValue", f'"{where}" must be true or false, got {value!r}')
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad_request("invalidValue", f'"{where}" must be an integer, got {value!r}')
    if kind == "decimal":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise bad_request("invalidValue", f'"{where}" must be a number, got {value!r}')
    if not isinstance(value, str):
        raise bad_request("invalidValue", f'"{where}" must be a string, got {value!r}')
    if kind == "dateTime":
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request("invalidValue", f'"{where}" must be an ISO 8601 date-time, got {value!r}') from None
    return value


def coerce_complex(attribute: Attribute, value: Any, where: str) -> dict:
    if attribute.name == "manager" and isinstance(value, str):
        # Entra: "value": "<manager id>" (plain string) in real traffic.
        value = {"value": value}
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and not attribute.multi_valued:
        # Entra's documented manager form: [{"$ref": ..., "value": id}].
        value = value[0]
    if not isinstance(value, dict):
        raise bad_request("invalidValue", f'"{where}" must be an object, got {value!r}')
    out = {}
    for key, sub_value in value.items():
        if sub_value is None:
            continue
        sub = attribute.sub(key)
        if sub is None:
            raise bad_request("invalidValue", f'unknown attribute "{where}.{key}"')
        if sub.read_only:
            continue
        out[sub.name] = coerce_scalar(sub, sub_value, f"{where}.{sub.name}")
    return out


def coerce(attribute: Attribute, value: Any, where: str) -> Any:
    """One attribute's value, checked and read the way Entra means it.

    Returns None for "no value" (null, an empty complex value).
    """
    if value is None:
        return None
    if attribute.multi_valued:
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise bad_request("invalidValue", f'"{where}" is multi-valued: send a list')
        items = []
        for item in value:
            if item is None:
                continue
            if attribute.type == "complex":
                item = coerce_complex(attribute, item, where)
                if not item:
                    continue
            else:
                item = coerce_scalar(attribute, item, where)
            items.append(item)
        return items
    if attribute.type == "complex":
        return coerce_complex(attribute, value, where) or None
    return coerce_scalar(attribute, value, where)


def _extension_object(rt: ResourceType, urn: str, value: Any) -> dict:
    schema = rt.extension(urn)
    if not isinstance(value, dict):
        raise bad_request("invalidValue", f'"{schema.id}" must be an object')
    out = {}
    for key, sub_value in value.items():
        if key.lower() == "schemas":
            continue
        attribute = schema.find(key)
        if attribute is None:
            raise bad_request("invalidValue", f'unknown attribute "{schema.id}:{key}"')
        if attribute.read_only:
            continue
        coerced = coerce(attribute, sub_value, f"{schema.id}:{attribute.name}")
        if coerced is not None:
            out[attribute.name] = coerced
    return out


def normalize(body: Any, rt: ResourceType) -> tuple[dict, list | None]:
    """A POST/PUT body to (data, members); members is None unless sent (groups)."""
    if not isinstance(body, dict):
        raise bad_request("invalidSyntax", "the request body must be a JSON object")
    data: dict = {}
    members = None
    for key, value in body.items():
        if value is None or key.lower() in READ_ONLY_TOP:
            continue
        if key.lower().startswith("urn:"):
            if rt.extension(key) is not None:
                ext = rt.extension(key)
                merged = {**data.get(ext.id, {}), **_extension_object(rt, key, value)}
                if merged:
                    data[ext.id] = merged
                continue
            resolved = rt.resolve(key)
            if resolved is None or resolved.sub is not None:
                raise bad_request("invalidValue", f'unknown attribute "{key}"')
            if resolved.urn is None:
                # A core attribute spelled with the core URN.
                key = resolved.attribute.name
            else:
                coerced = coerce(resolved.attribute, value, resolved.text())
                if coerced is not None and not resolved.attribute.read_only:
                    data.setdefault(resolved.urn, {})[resolved.attribute.name] = coerced
                continue
        found = rt.top(key)
        if found is None:
            raise bad_request("invalidValue", f'unknown attribute "{key}"')
        attribute = found[1]
        if attribute.read_only:
            continue
        if rt.name == "Group" and attribute.name == "members":
            members = member_ids(value)
            continue
        coerced = coerce(attribute, value, attribute.name)
        if coerced is not None:
            data[attribute.name] = coerced
    for attribute in rt.core.attributes:
        if attribute.required and not data.get(attribute.name):
            raise bad_request("invalidValue", f'"{attribute.name}" is required')
    return data, members


def member_ids(value: Any) -> list[str]:
    """Group member values to user ids; only users can be members."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise bad_request("invalidValue", '"members" must be a list of {"value": "<user id>"}')
    ids = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, str):
            ids.append(item)
            continue
        if not isinstance(item, dict):
            raise bad_request("invalidValue", f"bad member {item!r}")
        lowered = {k.lower(): v for k, v in item.items()}
        member_type = lowered.get("type")
        if member_type is not None and str(member_type).lower() != "user":
            raise bad_request("invalidValue", "only users can be group members (nested groups are not supported)")
        member = lowered.get("value")
        if not isinstance(member, str) or not member:
            raise bad_request("invalidValue", f'a member needs a "value" with a user id, got {item!r}')
        ids.append(member)
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------ rendering


def render(record: Record, rt: ResourceType, base_url: str) -> dict:
    core = CORE_USER if rt.name == "User" else CORE_GROUP
    schemas = [core] + [s.id for s in rt.extensions if s.id in record.data]
    out: dict = {"schemas": schemas, "id": record.id}
    # Shared with record.data, not copied: project() copies what it changes.
    out.update(record.data)
    if record.members is not None:
        out["members"] = [
            # No "display": it would cost a join per member on a group of
            # 50,000, and Entra never reads it.
            {"value": m.value, "$ref": f"{base_url}/Users/{m.value}", "type": "User"}
            for m in record.members
        ]
    out["meta"] = {
        "resourceType": rt.name,
        "created": _iso(record.created),
        "lastModified": _iso(record.last_modified),
        "location": f"{base_url}{rt.endpoint}/{record.id}",
        "version": etag(record.version),
    }
    return out


def parse_attribute_list(
    text: str | None, rt: ResourceType, strict: bool = True
) -> list[tuple[str | None, str, str | None]]:
    """``attributes=``/``excludedAttributes=`` to [(urn or None, attr or "", sub)].

    An empty attr means the whole extension named by urn. Unknown names are a
    400 unless ``strict`` is off (a search across resource types, where a
    name may belong to the other type).
    """
    if not text:
        return []
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ext = rt.extension(item)
        if ext is not None:
            out.append((ext.id, "", None))
            continue
        if item.lower() in ("schemas",):
            continue
        resolved = rt.resolve(item)
        if resolved is None:
            if not strict:
                continue
            raise bad_request("invalidValue", f'unknown attribute "{item}" in attributes/excludedAttributes')
        out.append((resolved.urn, resolved.attribute.name, resolved.sub.name if resolved.sub else None))
    return out


def project(resource: dict, include: Iterable, exclude: Iterable) -> dict:
    """Apply RFC 7644 §3.9: ``attributes`` narrows to the listed ones (plus
    ``id`` and ``schemas``, always returned); ``excludedAttributes`` removes."""
    include, exclude = list(include), list(exclude)
    if include:
        out = {"schemas": resource["schemas"], "id": resource["id"]}
        for urn, name, sub in include:
            source, target = resource, out
            if urn:
                if urn not in resource:
                    continue
                source = resource[urn]
                target = out.setdefault(urn, {})
                if not name:
                    out[urn] = copy.deepcopy(source)
                    continue
            if name not in source:
                continue
            if sub is None:
                target[name] = copy.deepcopy(source[name])
            elif isinstance(source[name], list):
                kept = [{sub: e[sub]} for e in source[name] if isinstance(e, dict) and sub in e]
                if kept:
                    target[name] = kept
            elif isinstance(source[name], dict) and sub in source[name]:
                target.setdefault(name, {})[sub] = copy.deepcopy(source[name][sub])
        resource = out
    # The values may be shared with the stored record (render does not copy
    # them): replace what is narrowed with narrowed copies, never change it.
    for urn, name, sub in exclude:
        if name in ("id",):
            continue
        if urn:
            if not isinstance(resource.get(urn), dict):
                continue
            target = resource[urn] = dict(resource[urn])
        else:
            target = resource
        if not name:
            resource.pop(urn, None)
        elif sub is None:
            target.pop(name, None)
        elif isinstance(target.get(name), list):
            target[name] = [
                {k: v for k, v in element.items() if k != sub} if isinstance(element, dict) else element
                for element in target[name]
            ]
        elif isinstance(target.get(name), dict):
            target[name] = {k: v for k, v in target[name].items() if k != sub}
    return resource
