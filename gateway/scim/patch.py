"""PATCH (RFC 7644 §3.5.2) on one resource's data, in Entra's dialect too.

:func:`apply_patch` works on a copy of the stored data and returns the new
data plus the membership changes, in request order, for the storage backend
to apply a row at a time (a group's members never travel as a whole list).

Entra's dialect, accepted alongside the RFC:

- ``op`` in any case (``Add``, ``Replace``, ``Remove``);
- booleans as ``"True"``/``"False"`` strings (see :mod:`.resources`);
- path-less ``add``/``replace`` whose value object has dotted keys
  (``name.givenName``) and URN-qualified keys (``urn:...:User:department``);
- value-path targets that do not exist yet (``phoneNumbers[type eq "work"].value``)
  are created from the filter's equalities instead of failing with ``noTarget``;
- ``Remove`` + ``path: members`` + a value list removes *only* those members
  (a strict reading that removes every member is how data gets lost).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .errors import ScimError, bad_request
from .filters import Compare, Or, PatchPath, element_matches, parse_path, simple_equalities
from .resources import coerce, coerce_complex, member_ids
from .schemas import PATCH_OP, ResolvedPath, ResourceType

OPS = ("add", "replace", "remove")


@dataclass
class PatchResult:
    data: dict
    #: [("add"|"remove"|"set", [user ids])] in request order (groups only).
    member_changes: list[tuple[str, list[str]]] = field(default_factory=list)


def parse_operations(body: Any) -> list[dict]:
    if not isinstance(body, dict):
        raise bad_request("invalidSyntax", "the PATCH body must be a JSON object")
    schemas = body.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or PATCH_OP not in schemas):
        raise bad_request("invalidSyntax", f'a PATCH body\'s "schemas" must contain "{PATCH_OP}"')
    operations = next((v for k, v in body.items() if k.lower() == "operations"), None)
    if not isinstance(operations, list) or not operations:
        raise bad_request("invalidSyntax", 'a PATCH body needs a non-empty "Operations" list')
    parsed = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise bad_request("invalidSyntax", f"bad operation {operation!r}")
        fields = {k.lower(): v for k, v in operation.items()}
        op = fields.get("op")
        if not isinstance(op, str) or op.lower() not in OPS:
            raise bad_request("invalidSyntax", f'"op" must be add, replace or remove, got {op!r}')
        path = fields.get("path")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise bad_request("invalidPath", f"bad path {path!r}")
        parsed.append({"op": op.lower(), "path": path, "value": fields.get("value"), "has_value": "value" in fields})
    return parsed


def apply_patch(data: dict, body: Any, rt: ResourceType) -> PatchResult:
    result = PatchResult(copy.deepcopy(data))
    for operation in parse_operations(body):
        _Operation(result, rt, operation).run()
    return result


def adds_or_removes_members_only(body: Any, rt: ResourceType) -> bool:
    """Whether every operation of a group PATCH adds or removes members by
    path (``members``, ``members[value eq "..."]``) and nothing else: what
    Entra sends to fill a group. Such a PATCH needs none of the group's other
    attributes, so the core applies it without reading the group first. A
    malformed body answers False; :func:`apply_patch` then reports it."""
    if rt.name != "Group":
        return False
    try:
        operations = parse_operations(body)
        for operation in operations:
            if operation["path"] is None or operation["op"] == "replace":
                return False
            target = parse_path(operation["path"], rt)
            if target.extension is not None or target.path.attribute.name != "members":
                return False
            if (
                operation["op"] == "remove"
                and target.filter is None
                and not (operation["has_value"] and operation["value"] is not None)
            ):
                return False  # removes every member: a replace
    except ScimError:
        return False
    return True


def _key(container: dict, name: str) -> str:
    """The stored spelling of ``name`` in ``container`` (custom attributes keep
    the first spelling sent), or ``name`` when absent."""
    lowered = name.lower()
    for key in container:
        if key.lower() == lowered:
            return key
    return name


class _Operation:
    def __init__(self, result: PatchResult, rt: ResourceType, operation: dict):
        self.result = result
        self.data = result.data
        self.rt = rt
        self.op = operation["op"]
        self.path = operation["path"]
        self.value = operation["value"]
        self.has_value = operation["has_value"]

    def run(self) -> None:
        if self.path is None:
            if self.op == "remove":
                raise bad_request("noTarget", "remove needs a path")
            if not isinstance(self.value, dict):
                raise bad_request("invalidValue", f"{self.op} without a path needs an object value")
            for key, value in self.value.items():
                if key.lower() in ("schemas", "id", "meta"):
                    continue
                # Dotted (name.givenName) and URN-qualified keys are paths.
                self.apply(self.parse(key), value)
            return
        self.apply(self.parse(self.path), self.value)

    def parse(self, text: str) -> PatchPath:
        return parse_path(text, self.rt)

    # -------------------------------------------------------------- dispatch

    def apply(self, target: PatchPath, value: Any) -> None:
        if target.extension is not None:
            return self.whole_extension(target.extension, value)
        path = target.path
        if path.attribute.read_only or (path.sub is not None and path.sub.read_only):
            raise bad_request("mutability", f'"{path.text()}" is read-only')
        if self.rt.name == "Group" and path.attribute.name == "members":
            return self.members(target, value)
        if self.op == "remove":
            return self.remove(target, value)
        if value is None:
            # null means "no value" (RFC 7643 §2.5): replacing with it removes.
            return self.remove(target, None)
        if target.filter is not None:
            return self.filtered(target, value)
        container = self.container(path, create=True)
        key = _key(container, path.attribute.name)
        attribute = path.attribute
        if path.sub is None:
            coerced = coerce(attribute, value, path.text())
            if coerced is None:
                container.pop(key, None)
            elif attribute.multi_valued and self.op == "add":
                current = container.get(key) or []
                container[key] = current + [v for v in coerced if v not in current]
            elif attribute.type == "complex" and not attribute.multi_valued and "value" not in coerced:
                # RFC 7644 §3.5.2.3: sub-attributes not given are left unchanged.
                container[key] = {**(container.get(key) or {}), **coerced}
            else:
                container[key] = coerced
        elif attribute.multi_valued:
            raise bad_request(
                "invalidPath",
                f'"{path.text()}": select elements with a filter, e.g. {attribute.name}[type eq "work"].{path.sub.name}',
            )
        else:
            sub_value = coerce(path.sub, value, path.text())
            current = container.get(key) or {}
            current[path.sub.name] = sub_value
            container[key] = current
        self.prune(path)

    def container(self, path: ResolvedPath, create: bool) -> dict | None:
        if path.urn is None:
            return self.data
        key = _key(self.data, path.urn)
        if key not in self.data:
            if not create:
                return None
            self.data[path.urn] = {}
            key = path.urn
        return self.data[key]

    def prune(self, path: ResolvedPath) -> None:
        if path.urn and not self.data.get(path.urn):
            self.data.pop(path.urn, None)

    def whole_extension(self, urn: str, value: Any) -> None:
        if self.op == "remove":
            self.data.pop(urn, None)
            return
        if value is None:
            return
        if not isinstance(value, dict):
            raise bad_request("invalidValue", f'"{urn}" must be an object')
        for key, sub_value in value.items():
            if key.lower() == "schemas":
                continue
            self.apply(self.parse(f"{urn}:{key}"), sub_value)
        # An extension set as a whole stays, even empty: as sent.
        self.data.setdefault(urn, {})

    # -------------------------------------------------------------- value paths

    def filtered(self, target: PatchPath, value: Any) -> None:
        path = target.path
        container = self.container(path, create=True)
        key = _key(container, path.attribute.name)
        elements = container.get(key) or []
        matches = [e for e in elements if element_matches(target.filter, e)]
        if not matches:
            seed = simple_equalities(target.filter)
            if seed is None:
                raise bad_request("noTarget", f'no element of "{path.attribute.name}" matches the path filter')
            element = coerce_complex(path.attribute, seed, path.attribute.name)
            elements.append(element)
            matches = [element]
        for element in matches:
            if path.sub is not None:
                element[path.sub.name] = coerce(path.sub, value, path.text())
            else:
                element.update(coerce_complex(path.attribute, value, path.attribute.name))
        container[key] = elements
        self.prune(path)

    def remove(self, target: PatchPath, value: Any) -> None:
        path = target.path
        if path.sub is None and path.attribute.required:
            raise bad_request("mutability", f'"{path.text()}" is required and cannot be removed')
        container = self.container(path, create=False)
        if container is None:
            return
        key = _key(container, path.attribute.name)
        if key not in container:
            return
        attribute = path.attribute
        if target.filter is not None:
            kept = []
            for element in container[key]:
                if not element_matches(target.filter, element):
                    kept.append(element)
                elif path.sub is not None:
                    element.pop(path.sub.name, None)
                    if element:
                        kept.append(element)
            container[key] = kept
        elif path.sub is not None:
            if attribute.multi_valued:
                for element in container[key]:
                    element.pop(path.sub.name, None)
            else:
                container[key].pop(path.sub.name, None)
        elif attribute.multi_valued and self.has_value and value is not None:
            # Entra: {"op": "Remove", "path": "emails", "value": [{...}]} removes
            # only the listed values.
            listed = coerce(attribute, value, path.text()) or []
            if attribute.type == "complex":
                wanted = {e.get("value") for e in listed if "value" in e}
                container[key] = [e for e in container[key] if e not in listed and e.get("value") not in wanted]
            else:
                container[key] = [e for e in container[key] if e not in listed]
        else:
            container.pop(key)
        if isinstance(container.get(key), (list, dict)) and not container[key]:
            container.pop(key)
        self.prune(path)

    # -------------------------------------------------------------- group members

    def members(self, target: PatchPath, value: Any) -> None:
        changes = self.result.member_changes
        if target.filter is not None:
            if self.op != "remove" or target.path.sub is not None:
                raise bad_request("invalidPath", 'only "remove" can take members[value eq "..."]')
            changes.append(("remove", _ids_from_filter(target.filter)))
            return
        if target.path.sub is not None:
            raise bad_request("invalidPath", f'"{target.path.text()}" cannot be patched; patch "members"')
        if self.op == "remove":
            if self.has_value and value is not None:
                # Entra's default: Remove + path members + a list: only those.
                changes.append(("remove", member_ids(value)))
            else:
                changes.append(("set", []))
        elif self.op == "add":
            changes.append(("add", member_ids(value if value is not None else [])))
        else:
            changes.append(("set", member_ids(value if value is not None else [])))


def _ids_from_filter(expr) -> list[str]:
    """members[value eq "a"] and members[value eq "a" or value eq "b"]."""
    if isinstance(expr, Or):
        return _ids_from_filter(expr.left) + _ids_from_filter(expr.right)
    if isinstance(expr, Compare) and expr.op == "eq" and expr.path.sub is not None and expr.path.sub.name == "value":
        return [str(expr.value)]
    raise bad_request("invalidFilter", 'members can be selected only with value eq "<id>" (joined by or)')
