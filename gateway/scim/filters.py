"""SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2), parsed to a small AST.

Why our own parser rather than scim2-filter-parser's SQL transpiler: the
transpiler silently drops a comparison on an attribute missing from its
attribute map (for Entra, a mistyped filter would then return *every* user
and provoke duplicate creates), formats SQL text itself, caps a query at 26
parameters, leaves ``%``/``_`` unescaped in ``co``/``sw``/``ew``, and has no
notion of multi-valued attributes stored as JSON. A recursive-descent parser
of this grammar is ~250 lines; resolving every attribute against the
published schemas here means an unknown attribute is always a 400
``invalidFilter``, and each storage backend translates one resolved AST
(the sqlstore into indexed SQL).

The AST is backend-neutral:

- :class:`Compare` ``path op value`` (``op`` in eq ne co sw ew gt ge lt le)
- :class:`Present` ``path pr``
- :class:`And`, :class:`Or`, :class:`Not`
- :class:`Has` ``attr[filter]``: some element of the multi-valued ``attr``
  matches ``filter``, whose paths are that attribute's sub-attributes.
  ``emails.value eq "x"`` is normalised to ``Has(emails, value eq "x")`` and
  Entra's ``emails[type eq "work"].value eq "x"`` to
  ``Has(emails, type eq "work" and value eq "x")``.

Accepted beyond the RFC because Entra sends it: operators and ``and``/``or``/
``not`` in any case, an unquoted single-word value (``externalId eq jyoung``),
and a sub-attribute after a value path in a filter.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .schemas import Attribute, ResolvedPath, ResourceType

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
ORDERING_OPS = frozenset({"gt", "ge", "lt", "le"})
STRING_OPS = frozenset({"co", "sw", "ew"})
MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 32


@dataclass(frozen=True)
class Compare:
    path: ResolvedPath
    op: str
    value: Any


@dataclass(frozen=True)
class Present:
    path: ResolvedPath


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class Has:
    path: ResolvedPath  # the multi-valued attribute (no sub)
    expr: Expr  # over its elements; paths carry ``sub``


Expr = Compare | Present | And | Or | Not | Has


@dataclass(frozen=True)
class PatchPath:
    """A PATCH ``path``: an attribute (maybe with sub), maybe an element filter,
    or (``path is None``) a whole extension schema by its URN."""

    path: ResolvedPath | None
    filter: Expr | None = None
    extension: str | None = None


# ------------------------------------------------------------------ lexer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<punct>[()\[\]])
  | (?P<dotword>\.[A-Za-z$][\w$\-]*)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w:.]))
  | (?P<word>[A-Za-z$][\w$\-.:]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str
    pos: int


def _tokens(text: str, error) -> list[_Token]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise error(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = match.lastgroup
        if kind != "ws":
            out.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return out


# ------------------------------------------------------------------ parser


class _Parser:
    def __init__(self, text: str, resource_type: ResourceType, scim_type: str = "invalidFilter"):
        self.text = text
        self.rt = resource_type
        self.scim_type = scim_type
        self.tokens = _tokens(text, self.error)
        self.i = 0
        self.depth = 0

    def error(self, detail: str):
        return bad_request(self.scim_type, f"{detail} in {self.text!r}")

    def peek(self, offset: int = 0) -> _Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.i += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise self.error(f"expected {text!r} at position {token.pos + 1}, found {token.text!r}")

    # filter := or_expr
    def parse_filter(self, parent: Attribute | None = None) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("filter nested too deeply")
        left = self.parse_and(parent)
        while self.keyword("or"):
            self.take()
            left = Or(left, self.parse_and(parent))
        self.depth -= 1
        return left

    def parse_and(self, parent):
        left = self.parse_unary(parent)
        while self.keyword("and"):
            self.take()
            left = And(left, self.parse_unary(parent))
        return left

    def parse_unary(self, parent):
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        if self.keyword("not") and self.peek(1) is not None and self.peek(1).text == "(":
            self.take()
            self.take()
            inner = self.parse_filter(parent)
            self.expect(")")
            return Not(inner)
        if token.text == "(":
            self.take()
            inner = self.parse_filter(parent)
            self.expect(")")
            return inner
        return self.parse_attr_expr(parent)

    def resolve(self, name: str, parent: Attribute | None, pos: int) -> ResolvedPath:
        if parent is not None:
            sub = parent.sub(name)
            if sub is None and parent.open:
                sub = Attribute(name, open=True)
            if sub is None:
                raise self.error(f'unknown attribute "{parent.name}.{name}"')
            return ResolvedPath(self._schema_of(parent), parent, sub)
        resolved = self.rt.resolve(name)
        if resolved is None:
            raise self.error(f'unknown attribute "{name}"')
        return resolved

    def _schema_of(self, attribute: Attribute):
        for schema in self.rt.schemas:
            if any(a is attribute for a in schema.attributes):
                return schema
        return self.rt.core

    def parse_attr_expr(self, parent):
        token = self.take()
        if token.kind != "word":
            raise self.error(f"expected an attribute at position {token.pos + 1}, found {token.text!r}")
        nxt = self.peek()
        if parent is None and nxt is not None and nxt.text == "[":
            return self.parse_value_path(token)
        path = self.resolve(token.text, parent, token.pos)
        return self.comparison(path, parent)

    def parse_value_path(self, token: _Token) -> Expr:
        outer = self.resolve(token.text, None, token.pos)
        if outer.sub is not None or outer.attribute.type != "complex":
            raise self.error(f'"{token.text}" is not a complex attribute and cannot take a [filter]')
        self.take()  # [
        inner = self.parse_filter(outer.attribute)
        self.expect("]")
        nxt = self.peek()
        if nxt is not None and nxt.kind == "dotword":
            # Entra's emails[type eq "work"].value eq "x": the element must
            # match the bracket filter and the trailing comparison.
            self.take()
            sub_path = self.resolve(nxt.text[1:], outer.attribute, nxt.pos)
            inner = And(inner, self.comparison(sub_path, outer.attribute))
        return self._wrap(outer, inner)

    def _wrap(self, outer: ResolvedPath, inner: Expr) -> Expr:
        if outer.attribute.multi_valued:
            return Has(ResolvedPath(outer.schema, outer.attribute), inner)
        # A single-valued complex attribute (name[givenName eq "x"]): the filter
        # applies to it directly.
        return inner

    def comparison(self, path: ResolvedPath, parent) -> Expr:
        token = self.take()
        op = token.text.lower()
        if token.kind != "word" or (op != "pr" and op not in COMPARE_OPS):
            raise self.error(f"expected an operator at position {token.pos + 1}, found {token.text!r}")
        if op == "pr":
            node: Expr = Present(path)
            if parent is None and path.attribute.multi_valued and path.sub is not None:
                return Has(ResolvedPath(path.schema, path.attribute), node)
            return node
        value = self.value()
        if path.sub is None and path.attribute.type == "complex":
            # ``manager eq "id"`` and ``emails eq "x"`` mean the value sub-attribute.
            value_sub = path.attribute.sub("value")
            if value_sub is None:
                raise self.error(f'"{path.text()}" is complex; name a sub-attribute')
            path = ResolvedPath(path.schema, path.attribute, value_sub)
        value = self.check_value(path, op, value)
        node = Compare(path, op, value)
        if parent is None and path.attribute.multi_valued:
            return Has(ResolvedPath(path.schema, path.attribute), node)
        return node

    def value(self) -> Any:
        token = self.take()
        if token.kind == "string":
            try:
                return json.loads(token.text)
            except ValueError:
                raise self.error(f"bad string at position {token.pos + 1}") from None
        if token.kind == "number":
            return json.loads(token.text)
        if token.kind == "word":
            lowered = token.text.lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            if lowered == "null":
                return None
            # Entra's older docs show ``externalId eq jyoung``: a bare word is a string.
            return token.text
        raise self.error(f"expected a value at position {token.pos + 1}, found {token.text!r}")

    def check_value(self, path: ResolvedPath, op: str, value: Any) -> Any:
        leaf = path.leaf
        if value is None:
            if op not in ("eq", "ne"):
                raise self.error(f"null cannot be compared with {op}")
            return None
        if leaf.type == "boolean":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool) or op not in ("eq", "ne"):
                raise self.error(f'"{path.text()}" is boolean: use eq or ne with true or false')
            return value
        if leaf.type == "dateTime":
            if op in STRING_OPS:
                raise self.error(f'"{path.text()}" is a date: {op} does not apply')
            try:
                parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                raise self.error(f'"{value}" is not an ISO 8601 date-time') from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        if leaf.type in ("integer", "decimal"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(f'"{path.text()}" is a number')
            return value
        if leaf.open:
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(f'"{path.text()}" needs a string value')
        return str(value)

    def done(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token.text!r} at position {token.pos + 1}")


def parse_filter(text: str, resource_type: ResourceType) -> Expr:
    """Parse ``filter=`` for ``resource_type``; ScimError 400 invalidFilter if bad."""
    if len(text) > MAX_FILTER_LENGTH:
        raise bad_request("invalidFilter", f"filter longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        raise bad_request("invalidFilter", "empty filter")
    expr = _simple_eq(text, resource_type)
    if expr is None:
        parser = _Parser(text, resource_type)
        expr = parser.parse_filter()
        parser.done()
    return expr


#: ``attr eq "value"``: what Entra sends before every create, in one match.
_SIMPLE_EQ = re.compile(r'\s*([A-Za-z$][\w$\-.:]*)\s+[eE][qQ]\s+("(?:[^"\\]|\\.)*")\s*')


def _simple_eq(text: str, resource_type: ResourceType) -> Compare | None:
    """The parser's own result for a string attribute compared with ``eq``
    (Entra's ``userName eq "..."`` lookup), without tokenising; None for
    anything else, which the full parser then takes (and explains if bad)."""
    match = _SIMPLE_EQ.fullmatch(text)
    if match is None:
        return None
    path = resource_type.resolve(match.group(1))
    if path is None or path.attribute.multi_valued:
        return None
    leaf = path.leaf
    if leaf.type != "string" or leaf.open:
        return None
    try:
        value = json.loads(match.group(2))
    except ValueError:
        return None
    return Compare(path, "eq", value)


def parse_path(text: str, resource_type: ResourceType) -> PatchPath:
    """Parse a PATCH ``path``; ScimError 400 invalidPath if bad or unknown.

    ``attr``, ``attr.sub``, ``urn:...:attr``, ``attr[filter]``,
    ``attr[filter].sub``, or just an extension URN.
    """
    text = text.strip()
    extension = resource_type.extension(text)
    if extension is not None:
        return PatchPath(None, extension=extension.id)
    parser = _Parser(text, resource_type, scim_type="invalidPath")
    token = parser.take()
    if token.kind != "word":
        raise parser.error("expected an attribute")
    nxt = parser.peek()
    if nxt is not None and nxt.text == "[":
        outer = parser.resolve(token.text, None, token.pos)
        if outer.sub is not None or outer.attribute.type != "complex" or not outer.attribute.multi_valued:
            raise parser.error(f'"{token.text}" is not a multi-valued complex attribute')
        parser.take()
        # Errors inside the brackets are filter errors, as RFC 7644 §3.5.2 says.
        parser.scim_type = "invalidFilter"
        inner = parser.parse_filter(outer.attribute)
        parser.expect("]")
        parser.scim_type = "invalidPath"
        sub = None
        nxt = parser.peek()
        if nxt is not None and nxt.kind == "dotword":
            parser.take()
            sub = outer.attribute.sub(nxt.text[1:])
            if sub is None:
                raise parser.error(f'unknown attribute "{outer.attribute.name}{nxt.text}"')
        parser.done()
        return PatchPath(ResolvedPath(outer.schema, outer.attribute, sub), inner)
    parser.done()
    resolved = parser.resolve(token.text, None, token.pos)
    return PatchPath(resolved)


# ------------------------------------------------------------------ evaluation of element filters


def _text(value: Any, case_exact: bool) -> Any:
    if isinstance(value, str) and not case_exact:
        return value.lower()
    return value


def element_matches(expr: Expr, element: Any) -> bool:
    """Does one element of a multi-valued attribute match a value-path filter?

    Used by PATCH on a single resource's list (never to filter a collection:
    that is the storage backend's job, in its query language).
    """
    if isinstance(expr, And):
        return element_matches(expr.left, element) and element_matches(expr.right, element)
    if isinstance(expr, Or):
        return element_matches(expr.left, element) or element_matches(expr.right, element)
    if isinstance(expr, Not):
        return not element_matches(expr.expr, element)
    if not isinstance(element, dict):
        return False
    sub = expr.path.sub
    actual = _lookup(element, sub.name) if sub else None
    if isinstance(expr, Present):
        return actual not in (None, "", [], {})
    if isinstance(expr, Has):
        return False
    wanted = expr.value
    if sub is not None and sub.type == "boolean" and isinstance(actual, str):
        actual = actual.lower() == "true"
    if expr.op == "eq":
        return _text(actual, sub.case_exact) == _text(wanted, sub.case_exact)
    if expr.op == "ne":
        return _text(actual, sub.case_exact) != _text(wanted, sub.case_exact)
    if actual is None:
        return False
    a, w = _text(actual, sub.case_exact), _text(wanted, sub.case_exact)
    try:
        if expr.op == "co":
            return str(w) in str(a)
        if expr.op == "sw":
            return str(a).startswith(str(w))
        if expr.op == "ew":
            return str(a).endswith(str(w))
        return {"gt": a > w, "ge": a >= w, "lt": a < w, "le": a <= w}[expr.op]
    except TypeError:
        return False


def _lookup(element: dict, name: str) -> Any:
    lowered = name.lower()
    for key, value in element.items():
        if key.lower() == lowered:
            return value
    return None


def simple_equalities(expr: Expr) -> dict[str, Any] | None:
    """``type eq "work"`` (and ``and``-ed equalities) as {sub: value}, else None.

    Entra replaces ``phoneNumbers[type eq "work"].value`` on users that have no
    work phone yet; such a target is created from these equalities.
    """
    if isinstance(expr, Compare) and expr.op == "eq" and expr.path.sub is not None:
        return {expr.path.sub.name: expr.value}
    if isinstance(expr, And):
        left, right = simple_equalities(expr.left), simple_equalities(expr.right)
        if left is not None and right is not None:
            return {**left, **right}
    return None
