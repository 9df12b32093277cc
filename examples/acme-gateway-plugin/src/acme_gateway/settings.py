"""The plugin's settings (``acme.*``), declared so the gateway checks them.

The gateway parses each declared key once at start-up (and in ``gateway
CONFIG check``) with the parser given here: a bad value, a missing required
key or an undeclared key under ``acme.`` stops start-up naming the key. The
parsed values are in ``registry.plugin_settings``, a dict by key.
"""

from __future__ import annotations

import os
import re

from gateway import ConfigError, hookimpl
from gateway.interfaces import PluginSetting
from gateway.settings import parse_names, parse_words

APPROVED_GROUPS = "acme.approved_groups"
CONTRACTOR_DOMAINS = "acme.contractor_domains"
LEVELS = "acme.levels"
DEFAULT_LEVEL = "acme.default_level"
EVENTS_FILE = "acme.events_file"

#: Title words and the level they mean; the first line whose words are in the title wins.
DEFAULT_LEVELS = """
    chief = executive
    vice president = executive
    vp = executive
    director = lead
    head = lead
    principal = senior
    senior = senior
    lead = senior
    junior = junior
    intern = junior
    trainee = junior
"""


def parse_groups(raw: str) -> frozenset[str]:
    """Group display names or Entra object ids, compared case-insensitively."""
    return frozenset(name.lower() for name in parse_names(raw))


def parse_domains(raw: str) -> frozenset[str]:
    domains = [d.lower() for d in parse_words(raw)]
    if not domains or not all(re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d) for d in domains):
        raise ValueError("expected email domains such as contractors.acme.example")
    return frozenset(domains)


def parse_level(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", value):
        raise ValueError("expected a level name such as staff (lower-case letters, digits, _ -)")
    return value


def parse_levels(raw: str) -> tuple[tuple[re.Pattern, str], ...]:
    """``title words = level`` lines, in order; the words match whole words of a title, in any case."""
    table = []
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words, sep, level = (part.strip() for part in line.partition("="))
        if not sep or not words:
            # A ValueError would quote the whole table: name the one bad line instead.
            raise ConfigError(f'{LEVELS}: expected one "title words = level" per line, got "{line}"')
        pattern = r"\b" + r"\s+".join(re.escape(w) for w in words.split()) + r"\b"
        table.append((re.compile(pattern, re.IGNORECASE), parse_level(level)))
    if not table:
        raise ValueError('expected one "title words = level" per line')
    return tuple(table)


def parse_events_file(raw: str) -> str:
    path = os.path.abspath(raw.strip())
    if not os.path.isdir(os.path.dirname(path)) or not os.access(os.path.dirname(path), os.W_OK):
        raise ValueError("expected a file in an existing folder the gateway may write to")
    return path


@hookimpl
def gateway_plugin_settings():
    return [
        PluginSetting(
            CONTRACTOR_DOMAINS, parse_domains, help="email domains of contractors (contractors.acme.example)"
        ),
        PluginSetting(
            APPROVED_GROUPS,
            parse_groups,
            default=frozenset(),
            help="groups (names or object ids) whose contractor members may sign in; none by default",
        ),
        PluginSetting(
            LEVELS,
            parse_levels,
            default=parse_levels(DEFAULT_LEVELS),
            help="title words = level, one pair a line, first match wins",
        ),
        PluginSetting(
            DEFAULT_LEVEL, parse_level, default="staff", help="the level of a person whose title matches no line"
        ),
        PluginSetting(EVENTS_FILE, parse_events_file, help="the JSON-lines file committed changes are appended to"),
    ]
