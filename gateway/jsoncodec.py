"""JSON in and out of the gateway: orjson where it is exact, ``json`` where it is not.

Every SCIM body, every SCIM response and every JSON column goes through
here. orjson reads and writes JSON several times faster than the standard
library (on an Entra sync, ``json`` was a tenth of the gateway's CPU), with
two gaps this module closes:

- it reads an integer of more than 64 bits as a float, so a number a client
  sent would come back changed. Text holding a run of 19 digits or more
  (which may be such an integer; a phone number in a string is, too) is
  read by ``json`` instead;
- it cannot write such an integer, nor a dict with keys that are not
  strings: those values are written by ``json``.

NaN and Infinity, which ``json`` would read but are not JSON, are refused
on both paths (:class:`ValueError`, like any other malformed text), and so
is nesting deeper than :data:`MAX_DEPTH`, before anything (the parser, or
the recursive code that walks a SCIM value) can run out of stack on it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Every digit to "0", everything else to "x": then a run of 19 digits is a
# plain substring search (a regular expression took four times orjson's parse).
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x78 for i in range(256))
_LONG_RUN = b"0" * 19

#: The deepest nesting of arrays and objects read. A SCIM resource nests
#: three or four levels; recursive walkers need a margin below Python's 1,000.
MAX_DEPTH = 64
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def loads(text: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text; :class:`ValueError` if it is not JSON."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # only then can it be too deep
        _check_depth(raw)
    if _LONG_RUN not in raw.translate(_DIGITS_TO_ZERO):
        return orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
    return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)


def _check_depth(raw: bytes) -> None:
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1


def contains_nul(value: Any) -> bool:
    """Whether a parsed value holds the NUL character in any string or key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    """:func:`dumps` as a ``str``, for database drivers that bind text."""
    return dumps(value).decode()
