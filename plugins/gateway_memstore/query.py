"""SCIM filters and sorting evaluated over documents held in memory: this store's query language.

The semantics are the SQL store's (``gateway_sqlstore.query``), so one
contract suite holds for both: comparisons follow RFC 7644 §3.4.2.2
(case-insensitive unless the attribute is ``caseExact``), a missing
attribute matches ``ne`` and ``not (...)``, ``attr[filter]`` matches when one
element does, a group's ``members`` are filtered by ``value`` (the user id)
or ``type``, and ``meta.created``/``meta.lastModified`` are the resource's
timestamps. What the SQL store refuses (nested value filters, other
``meta`` attributes, sorting by a complex or multi-valued attribute other
than ``emails``) raises :class:`~gateway.scim.storage.Unsupported` here too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from gateway.scim.filters import And, Has, Not, Or, Present
from gateway.scim.schemas import ResolvedPath
from gateway.scim.storage import Unsupported

STRING_TYPES = ("string", "reference", "binary")


def _kind(attribute) -> str:
    return "open" if attribute.open else attribute.type


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _compare(actual: Any, op: str, wanted: Any, case_exact: bool, kind: str) -> bool:
    """``actual op wanted`` for one value; ``actual`` None is a missing attribute."""
    if wanted is None:
        return actual is None if op == "eq" else actual is not None
    if op == "ne" and actual is None:
        return True
    if actual is None or isinstance(actual, (dict, list)):
        return False
    if kind == "boolean":
        if isinstance(actual, str):
            actual = actual.lower() == "true"
        return (actual == wanted) if op == "eq" else (actual != wanted)
    if kind in ("integer", "decimal"):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
    elif kind == "dateTime":
        actual = _iso(actual) if isinstance(actual, dt.datetime) else str(actual)
        wanted = _iso(wanted) if isinstance(wanted, dt.datetime) else str(wanted)
    elif kind in (*STRING_TYPES, "open"):
        actual, wanted = str(actual), str(wanted)
        if not case_exact:
            actual, wanted = actual.lower(), wanted.lower()
    try:
        if op == "eq":
            return actual == wanted
        if op == "ne":
            return actual != wanted
        if op == "co":
            return str(wanted) in str(actual)
        if op == "sw":
            return str(actual).startswith(str(wanted))
        if op == "ew":
            return str(actual).endswith(str(wanted))
        return {"gt": actual > wanted, "ge": actual >= wanted, "lt": actual < wanted, "le": actual <= wanted}[op]
    except TypeError:
        return False


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


class Resource:
    """What a filter sees of one stored resource."""

    __slots__ = ("id", "data", "created", "last_modified", "member_ids")

    def __init__(self, id: str, data: dict, created, last_modified, member_ids=None):
        self.id = id
        self.data = data
        self.created = created
        self.last_modified = last_modified
        self.member_ids = member_ids  # groups: a callable giving the member ids


class Evaluator:
    """One resource type's filters and sort keys; ``groups`` for the Group type."""

    def __init__(self, groups: bool):
        self.groups = groups

    # -------------------------------------------------------------- values

    def value(self, resource: Resource, path: ResolvedPath) -> tuple[Any, str, bool]:
        """(the value at ``path``, its kind, case_exact) for a single-valued path."""
        name, sub = path.attribute.name, (path.sub.name if path.sub else None)
        if path.urn is None and name == "id":
            return resource.id, "string", True
        if path.urn is None and name == "meta":
            if sub == "created":
                return resource.created, "dateTime", True
            if sub == "lastModified":
                return resource.last_modified, "dateTime", True
            raise Unsupported(f'cannot filter or sort on "{path.text()}"')
        node: Any = resource.data.get(path.urn) if path.urn else resource.data
        node = node.get(name) if isinstance(node, dict) else None
        if path.sub is not None and not path.attribute.multi_valued:
            node = node.get(sub) if isinstance(node, dict) else None
        leaf = path.leaf
        return node, _kind(leaf), leaf.case_exact

    def elements(self, resource: Resource, path: ResolvedPath) -> list:
        if self.groups and path.urn is None and path.attribute.name == "members":
            return [{"value": user_id, "type": "User"} for user_id in resource.member_ids()]
        node: Any = resource.data.get(path.urn) if path.urn else resource.data
        node = node.get(path.attribute.name) if isinstance(node, dict) else None
        return node if isinstance(node, list) else []

    # -------------------------------------------------------------- filters

    def matcher(self, expr) -> Callable[[Resource], bool]:
        """A predicate for ``expr``; raises Unsupported before any resource is read."""
        self.check(expr)
        return lambda resource: self.matches(expr, resource)

    def check(self, expr, inside: ResolvedPath | None = None) -> None:
        if isinstance(expr, (And, Or)):
            self.check(expr.left, inside)
            self.check(expr.right, inside)
        elif isinstance(expr, Not):
            self.check(expr.expr, inside)
        elif isinstance(expr, Has):
            if inside is not None:
                raise Unsupported("nested value filters are not supported")
            self.check(expr.expr, expr.path)
        elif inside is not None and self.groups and inside.urn is None and inside.attribute.name == "members":
            sub = expr.path.sub
            if sub is None or sub.name not in ("value", "type"):
                raise Unsupported(f'members can be filtered by value or type, not "{expr.path.text()}"')
        elif inside is None and expr.path.urn is None and expr.path.attribute.name == "meta":
            if expr.path.sub is None or expr.path.sub.name not in ("created", "lastModified"):
                raise Unsupported(f'cannot filter or sort on "{expr.path.text()}"')

    def matches(self, expr, resource: Resource) -> bool:
        if isinstance(expr, And):
            return self.matches(expr.left, resource) and self.matches(expr.right, resource)
        if isinstance(expr, Or):
            return self.matches(expr.left, resource) or self.matches(expr.right, resource)
        if isinstance(expr, Not):
            return not self.matches(expr.expr, resource)
        if isinstance(expr, Has):
            return any(self.element_matches(expr.expr, e, expr.path) for e in self.elements(resource, expr.path))
        path = expr.path
        if path.attribute.multi_valued and path.sub is None and isinstance(expr, Present):
            return bool(self.elements(resource, path))
        actual, kind, case_exact = self.value(resource, path)
        if isinstance(expr, Present):
            return isinstance(actual, dict) if path.leaf.type == "complex" else _present(actual)
        return _compare(actual, expr.op, expr.value, case_exact, kind)

    def element_matches(self, expr, element: Any, parent: ResolvedPath) -> bool:
        if isinstance(expr, And):
            return self.element_matches(expr.left, element, parent) and self.element_matches(
                expr.right, element, parent
            )
        if isinstance(expr, Or):
            return self.element_matches(expr.left, element, parent) or self.element_matches(expr.right, element, parent)
        if isinstance(expr, Not):
            return not self.element_matches(expr.expr, element, parent)
        sub = expr.path.sub
        if sub is None:  # a multi-valued attribute of simple values: the element itself
            if isinstance(expr, Present):
                return element is not None
            return _compare(element, expr.op, expr.value, expr.path.attribute.case_exact, "string")
        actual = element.get(sub.name) if isinstance(element, dict) else None
        if isinstance(expr, Present):
            return actual is not None
        if self.groups and parent.attribute.name == "members" and sub.name == "type":
            return _compare(actual, expr.op, expr.value, False, "string")
        return _compare(actual, expr.op, expr.value, sub.case_exact, _kind(sub))

    # -------------------------------------------------------------- sorting

    def sort_key(self, path: ResolvedPath | None) -> Callable[[Resource], tuple]:
        """A key for ``sorted``: missing values first, the id breaking ties."""
        if path is None:
            return lambda resource: (resource.id,)
        if path.attribute.multi_valued:
            if self.groups or path.urn is not None or path.attribute.name != "emails":
                raise Unsupported(f'cannot sort by multi-valued "{path.text()}"')
            from gateway.scim.directory import user_columns

            def email(resource):
                key = user_columns(resource.data)["email_key"]
                return (key is not None, key or "", resource.id)

            return email
        if path.leaf.type == "complex":
            raise Unsupported(f'cannot sort by complex "{path.text()}"')

        def key(resource):
            value, kind, case_exact = self.value(resource, path)
            if isinstance(value, dict | list):
                value = None
            if isinstance(value, dt.datetime):
                value = _iso(value)
            elif isinstance(value, str) and not case_exact:
                value = value.lower()
            if value is not None and not isinstance(value, (int, float, str)):
                value = str(value)
            rank = 0 if value is None else (1 if isinstance(value, (int, float)) else 2)
            return (rank, value if value is not None else 0, resource.id)

        return key
