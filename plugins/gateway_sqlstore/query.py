"""SCIM filter AST to SQLAlchemy expressions, on SQLite and PostgreSQL.

Attributes Entra looks resources up by have their own indexed columns and are
compared there: ``id`` (primary key), ``userName`` (unique ``user_name_key``,
lower-cased, so the case-insensitive match is an index lookup),
``externalId``, a group's ``displayName`` (unique ``display_name_key``),
``members.value`` (the ``group_members`` primary key), ``meta.created`` /
``meta.lastModified``. Every other attribute is read from the stored SCIM
JSON by the database's JSON functions (``json_extract``/``json_each`` on
SQLite, ``#>>``/``jsonb_array_elements`` on PostgreSQL), still in SQL: no
filter is ever evaluated in Python over loaded rows.

Comparisons follow RFC 7644 §3.4.2.2: case-insensitive unless the attribute
is ``caseExact``; a missing attribute matches ``ne`` and ``not (...)``
(three-valued SQL NULLs are folded to false first).

Case-insensitive means Python's ``str.lower()`` on both sides, on both
databases: the rule the ``*_key`` columns are written with and the filter
values are lowered with. In SQL that is never the builtin ``lower()``
(SQLite's folds ASCII letters only, so "ÉMILIE" missed "émilie" and Entra
then created a duplicate; PostgreSQL's follows the database's locale, ASCII
only under ``C``, and per character elsewhere, unlike Python for a final
sigma or "İ"). SQLite gets ``gateway_lower``, Python's own ``str.lower()``
registered as a deterministic function on every connection
(``gateway.db.create_engine``); PostgreSQL gets
``lower(x COLLATE "und-x-icu")``, ICU's default lowercase mapping, which is
Unicode's, the same as Python's whatever the database's locale (PostgreSQL
built with ICU, as every packaged build is). Not ``casefold()``: PostgreSQL
has none before version 18, and the stored keys are lower-cased, so
"straße" matches "STRAßE" but not "STRASSE". The builtin ``lower()`` stays
as it is: expression indexes (migration 0010) are built on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from gateway.db import SQLITE_LOWER
from gateway.db.models import Group, GroupMember, User
from gateway.scim.filters import And, Has, Not, Or, Present
from gateway.scim.schemas import ResolvedPath
from gateway.scim.storage import Unsupported

STRING_TYPES = ("string", "reference", "binary")

#: PostgreSQL's ICU root collation: its lower() is Unicode's default mapping, as Python's.
ICU_ROOT = "und-x-icu"


class _Dialect:
    """The JSON and string functions that differ between the two databases."""

    def __init__(self, name: str):
        self.pg = name == "postgresql"

    # a scalar inside a JSON column, as SQL text / number / boolean
    def json_text(self, column, keys):
        if self.pg:
            return column.op("#>>")(sa.literal(list(keys), ARRAY(sa.Text)))
        return sa.func.json_extract(column, _sqlite_path(keys))

    def json_bool(self, column, keys, wanted: bool):
        if self.pg:
            return self.json_text(column, keys) == ("true" if wanted else "false")
        return sa.func.json_type(column, _sqlite_path(keys)) == ("true" if wanted else "false")

    def json_number(self, column, keys):
        if self.pg:
            return sa.cast(self.json_text(column, keys), sa.Float)
        return sa.func.json_extract(column, _sqlite_path(keys))

    def json_present(self, column, keys):
        if self.pg:
            return column.op("#>")(sa.literal(list(keys), ARRAY(sa.Text))).is_not(None)
        return sa.func.json_type(column, _sqlite_path(keys)).is_not(None)

    def json_array_nonempty(self, column, keys):
        if self.pg:
            inner = column.op("#>")(sa.literal(list(keys), ARRAY(sa.Text)))
            return sa.and_(sa.func.jsonb_typeof(inner) == "array", sa.func.jsonb_array_length(inner) > 0)
        return sa.func.coalesce(sa.func.json_array_length(column, _sqlite_path(keys)), 0) > 0

    def elements(self, column, keys):
        """A table of the elements of a JSON array, with one column ``value``."""
        if self.pg:
            inner = column.op("#>")(sa.literal(list(keys), ARRAY(sa.Text)))
            array = sa.case((sa.func.jsonb_typeof(inner) == "array", inner), else_=sa.text("'[]'::jsonb"))
            return sa.func.jsonb_array_elements(array).table_valued("value").alias("el")
        return sa.func.json_each(column, _sqlite_path(keys)).table_valued("value", "type").alias("el")

    def element_text(self, element, sub: str):
        if self.pg:
            return element.c.value.op("->>")(sub)
        return sa.func.json_extract(element.c.value, _sqlite_path([sub]))

    def element_bool(self, element, sub: str, wanted: bool):
        if self.pg:
            return self.element_text(element, sub) == ("true" if wanted else "false")
        return sa.func.json_type(element.c.value, _sqlite_path([sub])) == ("true" if wanted else "false")

    def element_present(self, element, sub: str):
        if self.pg:
            return element.c.value.op("->")(sub).is_not(None)
        return sa.func.json_type(element.c.value, _sqlite_path([sub])).is_not(None)

    def element_scalar(self, element):
        """The element itself, for multi-valued attributes of simple values."""
        if self.pg:
            return element.c.value.op("#>>")(sa.literal([], ARRAY(sa.Text)))
        return element.c.value

    def lower(self, text):
        """``text`` lower-cased as Python's ``str.lower()`` lower-cases (see the module docstring)."""
        if self.pg:
            return sa.func.lower(sa.collate(sa.type_coerce(text, sa.Text), ICU_ROOT))
        return getattr(sa.func, SQLITE_LOWER)(text)

    def contains(self, text, value):
        return (sa.func.strpos(text, value) if self.pg else sa.func.instr(text, value)) > 0


def _sqlite_path(keys) -> str:
    return "$" + "".join('."' + str(k).replace('"', '\\"') + '"' for k in keys)


def _compare(d: _Dialect, expr, op: str, value, case_exact: bool, kind: str):
    """``expr op value`` for one SQL scalar expression."""
    if value is None:
        return expr.is_(None) if op == "eq" else expr.is_not(None)
    if kind in STRING_TYPES or kind == "open":
        value = str(value)
        if not case_exact:
            expr, value = d.lower(expr), value.lower()
    value_param = sa.literal(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else value
    if op == "eq":
        return expr == value_param
    if op == "ne":
        return sa.or_(expr.is_(None), expr != value_param)
    if op == "co":
        return d.contains(expr, value_param)
    if op == "sw":
        return sa.func.substr(expr, 1, len(value)) == value_param
    if op == "ew":
        return (
            sa.func.substr(expr, -len(value)) == value_param
            if not d.pg
            else sa.func.right(expr, len(value)) == value_param
        )
    return {"gt": expr > value_param, "ge": expr >= value_param, "lt": expr < value_param, "le": expr <= value_param}[
        op
    ]


def _kind(path: ResolvedPath) -> str:
    leaf = path.leaf
    return "open" if leaf.open else leaf.type


class Translator:
    """One resource type's filter and sort translation."""

    def __init__(self, dialect_name: str, model):
        self.d = _Dialect(dialect_name)
        self.model = model
        self.users = model is User

    # -------------------------------------------------------------- columns

    def column(self, path: ResolvedPath):
        """(expression, case_exact, kind) for an indexed column, or None."""
        m = self.model
        name, sub = path.attribute.name, (path.sub.name if path.sub else None)
        key = (path.urn, name, sub)
        if key == (None, "id", None):
            return m.id, True, "string"
        if key == (None, "externalId", None):
            return m.external_id, True, "string"
        if key == (None, "meta", "created"):
            return m.created_at, True, "dateTime"
        if key == (None, "meta", "lastModified"):
            return m.updated_at, True, "dateTime"
        if self.users:
            if key == (None, "userName", None):
                # user_name_key is lower-cased: equal to lower(value), via the index.
                return m.user_name_key, True, "lowered"
            if key == (None, "active", None):
                return m.active, True, "boolean"
        elif key == (None, "displayName", None):
            return m.display_name_key, True, "lowered"
        if path.urn is None and name == "meta":
            raise Unsupported(f'cannot filter or sort on "{path.text()}"')
        return None

    def keys(self, path: ResolvedPath) -> list[str]:
        keys = [path.urn] if path.urn else []
        keys.append(path.attribute.name)
        if path.sub is not None and not path.attribute.multi_valued:
            keys.append(path.sub.name)
        return keys

    # -------------------------------------------------------------- filters

    def where(self, expr):
        if isinstance(expr, And):
            return sa.and_(self.where(expr.left), self.where(expr.right))
        if isinstance(expr, Or):
            return sa.or_(self.where(expr.left), self.where(expr.right))
        if isinstance(expr, Not):
            return sa.not_(sa.func.coalesce(self.where(expr.expr), sa.false()))
        if isinstance(expr, Has):
            return self.has(expr)
        return self.scalar(expr)

    def scalar(self, expr):
        path = expr.path
        column = self.column(path)
        if column is not None:
            col, case_exact, kind = column
            if isinstance(expr, Present):
                return col.is_not(None)
            value = expr.value
            if kind == "lowered":
                value = value.lower() if isinstance(value, str) else value
                kind = "string"
            if kind == "boolean":
                if expr.op == "eq":
                    return col == value
                return sa.or_(col.is_(None), col != value)
            return _compare(self.d, col, expr.op, value, case_exact, kind)
        keys = self.keys(path)
        column_json = self.model.scim_data
        if isinstance(expr, Present):
            if path.attribute.multi_valued:
                return self.d.json_array_nonempty(column_json, keys)
            if path.leaf.type == "complex":
                return self.d.json_present(column_json, keys)
            text = self.d.json_text(column_json, keys)
            return sa.and_(text.is_not(None), sa.cast(text, sa.String) != "")
        kind = _kind(path)
        if kind == "boolean":
            if expr.value is None:
                return _compare(self.d, self.d.json_text(column_json, keys), expr.op, None, True, kind)
            match = self.d.json_bool(column_json, keys, expr.value)
            return match if expr.op == "eq" else sa.not_(sa.func.coalesce(match, sa.false()))
        if kind in ("integer", "decimal"):
            return _compare(self.d, self.d.json_number(column_json, keys), expr.op, expr.value, True, kind)
        if kind == "dateTime":
            value = expr.value.isoformat().replace("+00:00", "Z") if expr.value is not None else None
            return _compare(self.d, self.d.json_text(column_json, keys), expr.op, value, True, "string")
        return _compare(self.d, self.d.json_text(column_json, keys), expr.op, expr.value, path.leaf.case_exact, kind)

    def has(self, expr: Has):
        path = expr.path
        if not self.users and path.urn is None and path.attribute.name == "members":
            return self.members(expr.expr)
        element = self.d.elements(self.model.scim_data, self.keys(path))
        condition = self.element_where(expr.expr, element, path)
        return sa.exists(sa.select(sa.literal(1)).select_from(element).where(condition))

    def element_where(self, expr, element, parent: ResolvedPath):
        if isinstance(expr, And):
            return sa.and_(
                self.element_where(expr.left, element, parent), self.element_where(expr.right, element, parent)
            )
        if isinstance(expr, Or):
            return sa.or_(
                self.element_where(expr.left, element, parent), self.element_where(expr.right, element, parent)
            )
        if isinstance(expr, Not):
            return sa.not_(sa.func.coalesce(self.element_where(expr.expr, element, parent), sa.false()))
        if isinstance(expr, Has):
            raise Unsupported("nested value filters are not supported")
        sub = expr.path.sub
        if sub is None:
            # A multi-valued attribute of simple values: compare the element.
            value_expr = self.d.element_scalar(element)
            if isinstance(expr, Present):
                return value_expr.is_not(None)
            return _compare(self.d, value_expr, expr.op, expr.value, expr.path.attribute.case_exact, "string")
        if isinstance(expr, Present):
            return self.d.element_present(element, sub.name)
        if sub.type == "boolean" and expr.value is not None:
            match = self.d.element_bool(element, sub.name, expr.value)
            return match if expr.op == "eq" else sa.not_(sa.func.coalesce(match, sa.false()))
        return _compare(self.d, self.d.element_text(element, sub.name), expr.op, expr.value, sub.case_exact, sub.type)

    def members(self, expr):
        """members[...] on groups: rows of group_members, by user id."""
        condition = self.member_where(expr)
        return sa.exists(
            sa.select(sa.literal(1)).select_from(GroupMember).where(GroupMember.group_id == Group.id).where(condition)
        )

    def member_where(self, expr):
        if isinstance(expr, And):
            return sa.and_(self.member_where(expr.left), self.member_where(expr.right))
        if isinstance(expr, Or):
            return sa.or_(self.member_where(expr.left), self.member_where(expr.right))
        if isinstance(expr, Not):
            return sa.not_(sa.func.coalesce(self.member_where(expr.expr), sa.false()))
        sub = expr.path.sub
        if sub is not None and sub.name == "value":
            if isinstance(expr, Present):
                return sa.true()
            return _compare(self.d, GroupMember.user_id, expr.op, expr.value, True, "string")
        if sub is not None and sub.name == "type":
            if isinstance(expr, Present):
                return sa.true()
            return (
                sa.literal(str(expr.value).lower() == "user")
                if expr.op == "eq"
                else sa.literal(str(expr.value).lower() != "user")
            )
        raise Unsupported(f'members can be filtered by value or type, not "{expr.path.text()}"')  # pragma: no cover

    # -------------------------------------------------------------- sorting

    def order(self, path: ResolvedPath | None, descending: bool):
        if path is None:
            return [self.model.id]
        column = self.column(path)
        if column is not None:
            expr = column[0]
        elif path.attribute.multi_valued:
            if self.users and path.attribute.name == "emails":
                expr = User.email_key
            else:
                raise Unsupported(f'cannot sort by multi-valued "{path.text()}"')
        elif path.leaf.type == "complex":
            raise Unsupported(f'cannot sort by complex "{path.text()}"')
        else:
            expr = self.d.json_text(self.model.scim_data, self.keys(path))
            if not path.leaf.case_exact and _kind(path) in (*STRING_TYPES, "open"):
                expr = self.d.lower(expr)
        expr = expr.desc() if descending else expr.asc()
        # The id breaks ties, so pages never overlap or skip.
        return [expr, self.model.id]
