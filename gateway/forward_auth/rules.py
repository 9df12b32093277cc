"""Access rules for forward-auth: ``host path-prefix allow-groups...``, first match wins.

Each line of ``forward_auth.rules`` names a host (``app.example.com``,
``*.example.com`` or ``*``), a path prefix matched on segment boundaries
(``/admin`` covers ``/admin`` and ``/admin/users`` but not ``/administrator``)
and the groups allowed there (display names or external ids; quote names
with spaces; ``*`` allows every signed-in person). When rules exist and none
matches, the request is denied.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from gateway.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    host: str
    path_prefix: str
    groups: frozenset[str]
    line: str

    def matches(self, host: str, path: str) -> bool:
        return _host_matches(self.host, host) and _path_matches(self.path_prefix, path)

    def allows(self, groups: set[str]) -> bool:
        return "*" in self.groups or not self.groups.isdisjoint(groups)


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _path_matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    return path.startswith(prefix.rstrip("/") + "/")


def parse_rules(lines: tuple[str, ...]) -> tuple[Rule, ...]:
    rules = []
    for line in lines:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f'forward_auth.rules: {exc} in "{line}"') from None
        if len(words) < 3 or not words[1].startswith("/"):
            raise ConfigError(
                f'forward_auth.rules: expected "host path-prefix allow-groups...", got "{line}"'
            )
        host = words[0].lower()
        if host != "*" and ("*" in host[2:] or ("*" in host and not host.startswith("*."))):
            raise ConfigError(f'forward_auth.rules: expected a host, "*.domain" or "*", got "{words[0]}"')
        rules.append(Rule(host, words[1], frozenset(words[2:]), line))
    return tuple(rules)


def decide(rules: tuple[Rule, ...], host: str, path: str, groups: set[str]) -> bool:
    """True when allowed, False when denied; the matching rule decides."""
    if not rules:
        return True
    host = host.lower().split(":", 1)[0]
    for rule in rules:
        if rule.matches(host, path):
            return rule.allows(groups)
    return False
