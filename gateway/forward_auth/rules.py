"""Access rules for forward-auth: ``host path-prefix allow-groups...``, first match wins.

Each line of ``forward_auth.rules`` names a host (``app.example.com``,
``*.example.com`` or ``*``), a path prefix matched on segment boundaries
(``/admin`` covers ``/admin`` and ``/admin/users`` but not ``/administrator``)
and the groups allowed there (display names or external ids; quote names
with spaces; ``*`` allows every signed-in person). When rules exist and none
matches, the request is denied.

Hosts are compared without port and trailing dot; paths in the normal form
of :func:`~gateway.forward_auth.urls.normal_path` (case-insensitively
unless ``forward_auth.case_sensitive_paths``), so every spelling of a
protected prefix is protected. A path with no single normal form is denied
on a host whose rules look at paths; where the first rule for a host has
the prefix ``/``, the path plays no part and is never refused.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import quote

from gateway.errors import ConfigError

from .urls import canonical_host, host_matches, normal_path


@dataclass(frozen=True)
class Rule:
    host: str
    path_prefix: str  # normal form; "/" matches every path
    groups: frozenset[str]
    line: str

    def matches_path(self, path: str) -> bool:
        prefix = self.path_prefix
        if prefix == "/" or path == prefix:
            return True
        return path.startswith(prefix.rstrip("/") + "/")

    def allows(self, groups: set[str]) -> bool:
        return "*" in self.groups or not self.groups.isdisjoint(groups)


def parse_rules(lines: tuple[str, ...], case_sensitive: bool = False) -> tuple[Rule, ...]:
    rules = []
    for line in lines:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f'forward_auth.rules: {exc} in "{line}"') from None
        if len(words) < 3 or not words[1].startswith("/"):
            raise ConfigError(f'forward_auth.rules: expected "host path-prefix allow-groups...", got "{line}"')
        rules.append(Rule(_host_pattern(words[0]), _prefix(words[1], case_sensitive), frozenset(words[2:]), line))
    return tuple(rules)


def _host_pattern(word: str) -> str:
    if word == "*":
        return word
    host = canonical_host(word[2:] if word.startswith("*.") else word)
    if host is None or host.startswith("["):
        raise ConfigError(f'forward_auth.rules: expected a host, "*.domain" or "*", got "{word}"')
    return "*." + host if word.startswith("*.") else host


def _prefix(word: str, case_sensitive: bool) -> str:
    # A prefix is written as a path is sent, or with its characters decoded (/über).
    prefix = normal_path(quote(word, safe="!#$%&'()*+,/:;=?@[]~"), case_sensitive)
    if prefix is None:
        raise ConfigError(
            f"forward_auth.rules: expected a path prefix in normal form (no //, no . or .. segments,"
            f' no encoded / . ; %), got "{word}"'
        )
    return prefix


def decide(rules: tuple[Rule, ...], host: str | None, path: str | None, groups: set[str]) -> bool:
    """True when allowed, False when denied; the first matching rule decides.

    ``host`` and ``path`` are in normal form, or None when they have none;
    a path of None is denied once a rule for the host looks at paths.
    """
    if not rules:
        return True
    if host is None:
        return False
    for rule in rules:
        if not host_matches(rule.host, host):
            continue
        if rule.path_prefix == "/":
            return rule.allows(groups)
        if path is None:
            return False
        if rule.matches_path(path):
            return rule.allows(groups)
    return False
