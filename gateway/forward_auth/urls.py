"""The one strict reading of the URLs the gateway redirects to or judges by.

Three places take a URL from outside: ``/saml/login?next=``, an
IdP-initiated RelayState, and forward-auth (``rd`` and the original URL a
proxy reports). A URL passes only in a form that Python and a browser (the
WHATWG URL parser) read the same way: printable ASCII without a backslash
(browsers read ``\\`` as ``/`` and drop tabs and newlines), no userinfo, a
host of plain DNS labels, a dotted IPv4 address or a bracketed IPv6
address, and a numeric port. Everything else is refused rather than
repaired: an attacker's spelling is never interpreted.

Paths that forward-auth rules judge are normalised once here too
(:func:`normal_path`), so a rule protects every spelling of its prefix.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

#: The longest URL (or local path) accepted; ``saml_requests.next_path`` holds this many characters.
MAX_URL = 8192

# Printable ASCII without space and backslash: what a browser sends unchanged.
_VISIBLE = re.compile(r"[!-\[\]-~]*")
_ABSOLUTE = re.compile(r"([A-Za-z]+)://([^/?#]*)(.*)", re.S)
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(?::([0-9]{1,5}))?")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?")
# WHATWG reads a host whose last label is a number (decimal, 0x hex, or octal) as IPv4.
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# Decoded, these bytes would change how an app splits the path, or decode again: refused.
_REFUSED_BYTES = frozenset(b"/\\.;%") | frozenset(range(0x20)) | {0x7F}


@dataclass(frozen=True)
class Url:
    """An absolute http(s) URL that passed :func:`parse_url`."""

    url: str
    scheme: str
    host: str  # lower case, without port and trailing dot; IPv6 as "[compressed]"
    port: int | None
    path_and_query: str  # starts with "/", "?" or "#", or is empty


def parse_url(value: str) -> Url | None:
    """``value`` as an absolute http(s) URL, or None when a browser might read it otherwise."""
    if len(value) > MAX_URL or not _VISIBLE.fullmatch(value):
        return None
    match = _ABSOLUTE.fullmatch(value)
    if match is None:
        return None
    scheme, authority, rest = match.groups()
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        return None
    parts = _AUTHORITY.fullmatch(authority)
    if parts is None:
        return None
    host = canonical_host(parts.group(1))
    port = int(parts.group(2)) if parts.group(2) is not None else None
    if host is None or port == 0 or (port is not None and port > 65535):
        return None
    return Url(value, scheme, host, port, rest)


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    """``address`` as the WHATWG URL standard writes it: hex groups, the first
    longest run of two or more zero groups as ``::``. (Python 3.13 writes an
    IPv4-mapped address with a dotted tail, which browsers never do.)"""
    groups = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_length, start = -1, 1, None
    for index, group in enumerate([*groups, 1]):
        if group == 0 and start is None:
            start = index
        elif group != 0 and start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    text = [f"{g:x}" for g in groups]
    if best_start < 0:
        return ":".join(text)
    return ":".join(text[:best_start]) + "::" + ":".join(text[best_start + best_length :])


def canonical_host(value: str) -> str | None:
    """A host name as a browser reads it (lower case, no trailing dot), or None when odd.

    Letters, digits, ``-`` and ``_`` in labels of at most 63 characters; a
    host whose last label is numeric must be a canonical dotted IPv4 address
    (browsers read ``2130706433``, ``0x7f.1`` or ``010.0.0.1`` as addresses
    Python does not); IPv6 only in brackets, without a zone.
    """
    if value.startswith("["):
        if not value.endswith("]"):
            return None
        try:
            return f"[{_ipv6_text(ipaddress.IPv6Address(value[1:-1]))}]"
        except ValueError:
            return None
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            if str(ipaddress.IPv4Address(host)) != host:
                return None
        except ValueError:
            return None
    return host


def host_without_port(value: str) -> str | None:
    """A ``Host`` or ``X-Forwarded-Host`` value as :func:`canonical_host`, port dropped."""
    parts = _AUTHORITY.fullmatch(value)
    if parts is None:
        return None
    return canonical_host(parts.group(1))


def host_matches(pattern: str, host: str) -> bool:
    """``pattern`` is a canonical host, ``*.domain`` (any subdomain, not the domain itself) or ``*``."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def local_path(value: str) -> str | None:
    """``value`` if it is a path on this site that no browser reads as another site."""
    if len(value) > MAX_URL or not value.startswith("/") or value.startswith("//"):
        return None
    return value if _VISIBLE.fullmatch(value) else None


class ReturnTargets:
    """Where a browser may be sent back to after sign-in: ``next``, ``rd`` and RelayState.

    A local path, or an absolute URL on the gateway's own host or on a host
    matching ``forward_auth.allowed_hosts`` (any port). The host is compared
    as a browser reads it, so a URL that a browser would take elsewhere is
    never mistaken for an allowed one.
    """

    def __init__(self, base_url: str, allowed_hosts: tuple[str, ...]):
        own = parse_url(base_url)
        self.hosts = ((own.host,) if own else ()) + tuple(allowed_hosts)

    def absolute(self, value: str) -> str | None:
        """``value`` when it is an absolute URL on an allowed host."""
        url = parse_url(value)
        if url is None or not any(host_matches(pattern, url.host) for pattern in self.hosts):
            return None
        return url.url

    def check(self, value: str) -> str | None:
        """``value`` when a browser may be sent there: a local path or an allowed absolute URL."""
        if value.startswith("/"):
            return local_path(value)
        return self.absolute(value)


def normal_path(raw: str, case_sensitive: bool = False) -> str | None:
    """The path an app behind the proxy sees, or None when spellings could disagree.

    Percent-escapes are decoded and ``;`` parameters dropped (so ``/%72eports``
    and ``/reports;jsessionid=x`` are ``/reports``), and the result is lower
    case unless ``case_sensitive``. Refused (None), because apps and
    frameworks differ on them and a rule must not: repeated slashes, ``.``
    and ``..`` segments (``..;`` included), encoded ``/ \\ . ; %`` and
    control characters, invalid escapes or UTF-8, and anything but
    printable ASCII as sent.
    """
    if not raw.startswith("/") or not _VISIBLE.fullmatch(raw):
        return None
    segments = raw[1:].split("/")
    last = len(segments) - 1
    out = []
    for index, segment in enumerate(segments):
        segment = segment.split(";", 1)[0]
        if "%" in segment:
            segment = _decode(segment)
            if segment is None:
                return None
        if segment in (".", "..") or (not segment and index != last):
            return None
        out.append(segment)
    path = "/" + "/".join(out)
    return path if case_sensitive else path.lower()


def _decode(segment: str) -> str | None:
    raw = segment.encode("ascii")
    if raw.count(b"%") != len(_ESCAPE.findall(raw)):
        return None  # a "%" not followed by two hex digits
    if any(int(m.group(1), 16) in _REFUSED_BYTES for m in _ESCAPE.finditer(raw)):
        return None
    try:
        return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
