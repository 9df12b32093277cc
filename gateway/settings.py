"""Every core setting, parsed once into typed, frozen objects.

Defaults live here and nowhere else. A missing or bad value, or an unknown key
under one of the core prefixes, raises :class:`ConfigError` with one line that
names the key, the value and what was expected: in an auth service a typo must
never fall back to a default silently.

Plugins own the keys under their own prefix (for example ``seat_limit.*``) and
read them from ``registry.settings`` with the parsers exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

_REQUIRED = object()

#: Signature algorithm short names accepted in ``saml.allowed_signature_algorithms``,
#: with the XML-DSig URIs of the signature and of the matching digest.
SIGNATURE_ALGORITHMS: dict[str, tuple[str, str]] = {
    "rsa-sha1": ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1"),
    "rsa-sha256": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    ),
    "rsa-sha384": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
    ),
    "rsa-sha512": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    ),
    "ecdsa-sha256": (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    ),
    "ecdsa-sha384": (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
    ),
    "ecdsa-sha512": (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    ),
}


# --------------------------------------------------------------------------
# Values from the environment: ``${NAME}`` in any setting.
# --------------------------------------------------------------------------

#: ``${NAME}`` or ``${NAME:-default}``; ``$${...}`` stands for a literal ``${...}``.
_ENVIRONMENT_REFERENCE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, section: str = ""
) -> dict[str, Any]:
    """``raw`` with every ``${NAME}`` replaced by the environment's value.

    PasteDeploy, plaster_pastedeploy and pserve put no environment variables
    into the ini's ``%(...)s`` interpolation, and configparser leaves ``$``
    alone, so the gateway expands ``${NAME}`` itself, in the one place every
    loader goes through (the app factory, the CLI and the server runner).
    ``NAME_FILE`` names a file holding the value instead (as container
    platforms mount secrets), so a secret need not sit in the process
    environment. A reference that neither provides, and that has no
    ``:-default``, is a ConfigError naming the setting (after ``section``,
    when given) and the variable.
    """
    environ = os.environ if environ is None else environ
    expanded = {}
    for key, value in raw.items():
        if isinstance(value, str) and "${" in value:
            where = f"{section} {key}" if section else key
            value = _ENVIRONMENT_REFERENCE.sub(
                lambda match, where=where: _environment_value(where, match, environ), value
            )
        expanded[key] = value
    return expanded


def _environment_value(key: str, match: re.Match, environ: Mapping[str, str]) -> str:
    escaped, name, default = match.groups()
    if escaped:
        return match.group(0)[1:]
    value, path = environ.get(name, ""), environ.get(name + "_FILE", "")
    if value and path:
        raise ConfigError(f"{key}: both {name} and {name}_FILE are set; set only one")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                value = file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{key}: {name}_FILE names {path}, which cannot be read ({reason})") from None
        if not value:
            raise ConfigError(f"{key}: {name}_FILE names {path}, which is empty")
    if value:
        return value
    if default is not None:
        return default
    raise ConfigError(f"{key}: environment variable {name} is not set (nor {name}_FILE)")


# --------------------------------------------------------------------------
# Parsers: each takes the raw string and returns the typed value, or raises
# ValueError with the "expected ..." part of the message.
# --------------------------------------------------------------------------


def parse_words(raw: str) -> tuple[str, ...]:
    """Whitespace- or newline-separated words (commas are accepted too)."""
    return tuple(w for w in re.split(r"[\s,]+", raw.strip()) if w)


def parse_names(raw: str) -> tuple[str, ...]:
    """Names separated by whitespace or commas; quote a name with spaces: ``"Gateway Admins" 5f1c...``."""
    import shlex

    lexer = shlex.shlex(raw, posix=True)
    lexer.whitespace += ","
    lexer.whitespace_split = True
    try:
        return tuple(name for name in lexer if name)
    except ValueError:
        raise ValueError('expected names separated by spaces, with "quotes" around a name with spaces') from None


def parse_lines(raw: str) -> tuple[str, ...]:
    """One entry per non-blank line; ``#`` starts a comment."""
    out = []
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return tuple(out)


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def integer(minimum: int, maximum: int, unit: str = "") -> Callable[[str], int]:
    what = f"a whole number{' of ' + unit if unit else ''} between {minimum} and {maximum}"

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected {what}") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"expected {what}")
        return value

    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return value

    return parse


def parse_name(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", value):
        raise ValueError("expected a plugin or registration name (letters, digits, _ . -)")
    return value


def _is_loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or bool(host and host.startswith("127."))


def parse_base_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL such as https://auth.example.com")
    if parts.query or parts.fragment:
        raise ValueError("expected a URL without query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("expected an https URL (plain http is allowed only for localhost)")
    return value


def parse_database_url(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
        raise ValueError("expected a SQLAlchemy URL starting with sqlite:// or postgresql+psycopg://")
    return value


def parse_secret(raw: str) -> str:
    value = raw.strip()
    if len(value) < 32:
        raise ValueError("expected a random secret of at least 32 characters")
    return value


def readable_file(raw: str) -> str:
    path = raw.strip()
    if not path:
        return ""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError("expected a readable file")
    return path


def parse_metadata_source(raw: str) -> str:
    """A readable file or an https URL (http only for localhost)."""
    value = raw.strip()
    if not value:
        return ""
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            return value
        raise ValueError("expected a readable file or an https URL")
    try:
        return readable_file(value)
    except ValueError:
        raise ValueError("expected a readable file or an https URL") from None


def parse_signature_algorithms(raw: str) -> tuple[str, ...]:
    names = parse_words(raw)
    unknown = [n for n in names if n not in SIGNATURE_ALGORITHMS]
    if unknown or not names:
        raise ValueError("expected names from " + ", ".join(SIGNATURE_ALGORITHMS))
    return names


def parse_provisioning_mode(raw: str) -> frozenset[str]:
    modes = frozenset(parse_words(raw))
    if not modes or not modes <= {"scim", "first_login"}:
        raise ValueError('expected "scim", "first_login" or "scim first_login"')
    return modes


def parse_match_on(raw: str) -> tuple[str, ...]:
    keys = parse_words(raw)
    if not keys or any(k not in ("subject", "userName", "email") for k in keys):
        raise ValueError("expected one or more of subject, userName, email")
    return keys


def parse_urns(raw: str) -> tuple[str, ...]:
    urns = parse_words(raw)
    for urn in urns:
        if not re.fullmatch(r"urn:[A-Za-z0-9][A-Za-z0-9\-]{0,31}:[^\s]+", urn):
            raise ValueError("expected schema URNs such as urn:ietf:params:scim:schemas:extension:acme:2.0:User")
    return urns


def parse_proxies(raw: str) -> tuple[str, ...]:
    import ipaddress

    nets = parse_words(raw)
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ValueError("expected IP addresses or networks such as 127.0.0.1 10.0.0.0/8") from None
    return nets


def parse_header_name(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", value):
        raise ValueError("expected an HTTP header name")
    return value


def parse_host_patterns(raw: str) -> tuple[str, ...]:
    """Host names or ``*.domain``, as a browser reads them (lower case, no trailing dot); no scheme or port."""
    from .forward_auth.urls import canonical_host

    patterns = []
    for word in parse_words(raw):
        wildcard = word.startswith("*.")
        host = canonical_host(word[2:] if wildcard else word)
        if host is None or (wildcard and (host.startswith("[") or host.replace(".", "").isdigit())):
            raise ValueError(
                "expected host names or *.domain, without scheme, port or path, such as app.example.com *.example.com"
            )
        patterns.append("*." + host if wildcard else host)
    return tuple(patterns)


def parse_pass_groups(raw: str) -> tuple[str, ...]:
    """``all``, ``rules``, or group names and external ids (quoted when they contain spaces)."""
    names = parse_names(raw)
    if not names:
        raise ValueError("expected all, rules, or group names")
    return names


def setting(default: Any = _REQUIRED, parse: Callable[[str], Any] = str.strip) -> Any:
    """Declare one setting: its default (none means required) and its parser."""
    return field(default=default, metadata={"parse": parse})


def setting_family(label: str, parse_name: Callable[[str], Any], parse: Callable[[str], Any]) -> Any:
    """Declare the keys ``<section>.<field>.<name>``: a dict {name: value}, empty by default.

    ``parse_name`` checks the ``<name>`` part (ValueError for an unknown
    one), ``parse`` the value; ``label`` is how the docs write the name part.
    """
    return field(default_factory=dict, metadata={"parse": parse, "parse_name": parse_name, "label": label})


def parse_claim_field(raw: str) -> str:
    """A profile field of :data:`gateway.interfaces.PROFILE_FIELDS`, or ``custom.<name>``."""
    from .interfaces import PROFILE_FIELDS

    if raw in PROFILE_FIELDS or re.fullmatch(r"custom\.[A-Za-z_][A-Za-z0-9_\-]*", raw):
        return raw
    raise ValueError(f'unknown profile field "{raw}"; expected one of {", ".join(PROFILE_FIELDS)} or custom.<name>')


def parse_claim_uris(raw: str) -> tuple[str, ...]:
    """SAML attribute names (claim URIs), separated by whitespace."""
    uris = tuple(w for w in raw.split() if w)
    if not uris:
        raise ValueError("expected one or more claim URIs")
    return uris


# --------------------------------------------------------------------------
# The settings, one frozen dataclass per ini prefix.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewaySettings:
    base_url: str = setting(parse=parse_base_url)
    plugins: tuple[str, ...] = setting((), parse_words)
    admin_groups: tuple[str, ...] = setting((), parse_names)
    #: userNames that are admins whatever their groups: the first admin of a
    #: fresh deployment, before Entra has provisioned any group.
    admin_users: tuple[str, ...] = setting((), parse_names)


@dataclass(frozen=True)
class SamlSettings:
    idp_profile: str = setting("entra", parse_name)
    idp_metadata: str = setting("", parse_metadata_source)
    metadata_refresh: int = setting(3600, integer(60, 7 * 86400, "seconds"))
    #: Seconds one metadata fetch may take in all: resolving, connecting, redirects and the body.
    metadata_timeout: int = setting(10, integer(1, 120, "seconds"))
    #: Non-public addresses or networks a metadata URL may lead to (an on-premises IdP; tests).
    metadata_allow_networks: tuple[str, ...] = setting((), parse_proxies)
    #: CA certificates (PEM) trusted for an https metadata URL in place of the system's.
    metadata_ca_file: str = setting("", readable_file)
    sp_entity_id: str = setting("")
    key_file: str = setting("", readable_file)
    cert_file: str = setting("", readable_file)
    clock_skew: int = setting(180, integer(0, 600, "seconds"))
    require_signed: str = setting("either", choice("assertion", "response", "either", "both"))
    allow_idp_initiated: bool = setting(False, parse_bool)
    #: Who verifies SAML signatures: ``inprocess`` (lxml + cryptography) or the ``xmlsec1`` program.
    crypto_backend: str = setting("inprocess", choice("inprocess", "xmlsec1"))
    allowed_signature_algorithms: tuple[str, ...] = setting(
        ("rsa-sha256", "rsa-sha384", "rsa-sha512", "ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"),
        parse_signature_algorithms,
    )
    #: ``saml.claims.<field> = <claim URI>...``: the claims that field is read
    #: from, in place of the IdP profile's own (gateway.saml.claims).
    claims: Mapping[str, tuple[str, ...]] = setting_family("field", parse_claim_field, parse_claim_uris)


@dataclass(frozen=True)
class ScimSettings:
    storage: str = setting("sqlstore", parse_name)
    custom_schemas: tuple[str, ...] = setting((), parse_urns)
    max_body_bytes: int = setting(1_048_576, integer(1024, 100 * 1_048_576, "bytes"))
    allow_username_change: bool = setting(True, parse_bool)
    max_page_size: int = setting(1000, integer(1, 10_000))


@dataclass(frozen=True)
class ProvisioningSettings:
    mode: frozenset[str] = setting(frozenset({"scim", "first_login"}), parse_provisioning_mode)
    match_on: tuple[str, ...] = setting(("subject", "userName", "email"), parse_match_on)


@dataclass(frozen=True)
class SessionSettings:
    secret: str = setting(parse=parse_secret)
    max_age: int = setting(8 * 3600, integer(60, 30 * 86400, "seconds"))
    idle_timeout: int = setting(3600, integer(60, 30 * 86400, "seconds"))
    cookie_secure: bool = setting(True, parse_bool)
    cookie_name: str = setting("gateway_session", parse_header_name)
    cookie_domain: str = setting("")


@dataclass(frozen=True)
class AttributesSettings:
    transforms: tuple[str, ...] = setting((), parse_words)
    authority: str = setting("auto", choice("auto", "scim", "saml"))


@dataclass(frozen=True)
class ForwardAuthSettings:
    rules: tuple[str, ...] = setting((), parse_lines)
    headers: tuple[str, ...] = setting((), parse_words)
    #: Which proxy asks: it decides the one header set believed (never two, so a
    #: browser cannot add the other). Required once rules or allowed hosts are set.
    proxy: str = setting("", choice("nginx", "traefik", "caddy"))
    trusted_proxies: tuple[str, ...] = setting(("127.0.0.1", "::1"), parse_proxies)
    allowed_hosts: tuple[str, ...] = setting((), parse_host_patterns)
    case_sensitive_paths: bool = setting(False, parse_bool)
    header_encoding: str = setting("utf-8", choice("utf-8", "percent"))
    pass_groups: tuple[str, ...] = setting(("all",), parse_pass_groups)
    header_user_id: str = setting("X-Auth-Request-User-Id", parse_header_name)
    header_user: str = setting("X-Auth-Request-User", parse_header_name)
    header_email: str = setting("X-Auth-Request-Email", parse_header_name)
    header_name: str = setting("X-Auth-Request-Name", parse_header_name)
    header_groups: str = setting("X-Auth-Request-Groups", parse_header_name)

    def __post_init__(self):
        if not self.proxy and (self.rules or self.allowed_hosts):
            # Without it a Caddy or Traefik deployment would be judged by headers
            # the browser can send (or by the /auth request itself): refuse to guess.
            raise ConfigError(
                "forward_auth.proxy: required when forward_auth.rules or forward_auth.allowed_hosts is set;"
                ' expected one of nginx, traefik, caddy, got ""'
            )


@dataclass(frozen=True)
class AdminSettings:
    reauth_seconds: int = setting(900, integer(60, 86400, "seconds"))
    trace_retention_days: int = setting(7, integer(1, 365, "days"))
    trace_keep_responses: bool = setting(True, parse_bool)
    provisioning_log_retention_days: int = setting(7, integer(1, 365, "days"))
    provisioning_log_bodies: bool = setting(False, parse_bool)
    session_retention_days: int = setting(30, integer(1, 3650, "days"))
    audit_retention_days: int = setting(365, integer(1, 3650, "days"))


def parse_token(raw: str) -> str:
    value = raw.strip()
    if value and (len(value) < 16 or any(c.isspace() for c in value)):
        raise ValueError("expected a random token of at least 16 characters without spaces, or nothing")
    return value


@dataclass(frozen=True)
class MetricsSettings:
    #: Who may scrape /metrics: the client's own address, never a forwarded header.
    allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), parse_proxies)
    #: When set, a scrape must also send it as ``Authorization: Bearer TOKEN``.
    token: str = setting("", parse_token)


@dataclass(frozen=True)
class LoggingSettings:
    #: One line per request on the logger ``gateway.access`` (gateway.accesslog).
    access: bool = setting(False, parse_bool)


@dataclass(frozen=True)
class Settings:
    """All core settings; ``registry.gateway_settings`` holds the one instance."""

    database_url: str
    gateway: GatewaySettings
    saml: SamlSettings
    scim: ScimSettings
    provisioning: ProvisioningSettings
    session: SessionSettings
    attributes: AttributesSettings
    forward_auth: ForwardAuthSettings
    admin: AdminSettings
    metrics: MetricsSettings
    logging: LoggingSettings

    @property
    def sp_entity_id(self) -> str:
        return self.saml.sp_entity_id or self.gateway.base_url + "/saml/metadata"


SECTIONS: dict[str, type] = {
    "gateway": GatewaySettings,
    "saml": SamlSettings,
    "scim": ScimSettings,
    "provisioning": ProvisioningSettings,
    "session": SessionSettings,
    "attributes": AttributesSettings,
    "forward_auth": ForwardAuthSettings,
    "admin": AdminSettings,
    "metrics": MetricsSettings,
    "logging": LoggingSettings,
}

DATABASE_KEY = "sqlalchemy.url"


def documented_keys() -> list[str]:
    """Every core key, for the README completeness test and the CLI."""
    keys = [DATABASE_KEY]
    for prefix, cls in SECTIONS.items():
        keys += [
            f"{prefix}.{f.name}" + (f".<{f.metadata['label']}>" if "label" in f.metadata else "")
            for f in dataclasses.fields(cls)
        ]
    return keys


def _families() -> dict[str, dataclasses.Field]:
    """{``<section>.<field>.``: the field} of every family of keys (:func:`setting_family`)."""
    return {
        f"{prefix}.{f.name}.": f
        for prefix, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if "parse_name" in f.metadata
    }


def _parse_family(raw: dict[str, Any], stem: str, f: dataclasses.Field) -> dict[str, Any]:
    values: dict[str, Any] = {}
    owners: dict[Any, str] = {}
    for key in sorted(k for k in raw if k.startswith(stem)):
        try:
            name = f.metadata["parse_name"](key[len(stem) :])
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if str(raw[key]).strip() == "":
            continue
        values[name] = value = _parse_value(key, raw[key], f.metadata["parse"])
        for item in value if isinstance(value, tuple) else (value,):
            if item in owners:
                raise ConfigError(f'{key}: "{item}" is already given by {owners[item]}; give it once')
            owners[item] = key
    return values


def _parse_value(key: str, raw: Any, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(str(raw))
    except ValueError as exc:
        shown = str(raw).strip()
        if "secret" in key or "token" in key:
            shown = f"{len(shown)} characters"
        # A password in a URL (sqlalchemy.url) stays out of the message.
        shown = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", shown)
        raise ConfigError(f'{key}: {exc}, got "{shown}"') from None


def read_setting(raw: Any, key: str, parse: Callable[[str], Any], default: Any = _REQUIRED) -> Any:
    """One plugin-owned setting from the raw ini settings (``registry.settings``).

    Parsed with ``parse`` (one of the parsers above, or your own raising
    ValueError("expected ...")); a bad value raises ConfigError naming the
    key, as for core settings. Without ``default`` the key is required.
    """
    value = raw.get(key)
    if value is None or str(value).strip() == "":
        if default is _REQUIRED:
            raise ConfigError(f"{key}: required setting is missing")
        return default
    return _parse_value(key, value, parse)


def parse_settings(raw: dict[str, Any]) -> Settings:
    """Parse the ``[app:main]`` settings; raise ConfigError on the first problem."""
    known = set(documented_keys())
    families = _families()
    for key in sorted(raw):
        prefix = key.split(".", 1)[0]
        if prefix in SECTIONS and key not in known and not any(key.startswith(stem) for stem in families):
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
            raise ConfigError(f"{key}: unknown setting{suggestion}")

    sections = {}
    for prefix, cls in SECTIONS.items():
        values = {}
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}"
            if "parse_name" in f.metadata:
                values[f.name] = _parse_family(raw, key + ".", f)
            elif key in raw and str(raw[key]).strip() != "":
                values[f.name] = _parse_value(key, raw[key], f.metadata["parse"])
            elif f.default is _REQUIRED:
                raise ConfigError(f"{key}: required setting is missing")
        sections[prefix] = cls(**values)

    if DATABASE_KEY not in raw or not str(raw[DATABASE_KEY]).strip():
        raise ConfigError(f"{DATABASE_KEY}: required setting is missing")
    database_url = _parse_value(DATABASE_KEY, raw[DATABASE_KEY], parse_database_url)

    settings = Settings(database_url=database_url, **sections)
    if settings.session.idle_timeout > settings.session.max_age:
        raise ConfigError(
            f"session.idle_timeout: expected at most session.max_age ({settings.session.max_age}),"
            f' got "{settings.session.idle_timeout}"'
        )
    if settings.session.cookie_secure and settings.gateway.base_url.startswith("http://"):
        raise ConfigError(
            "session.cookie_secure: browsers drop Secure cookies over plain http; set it to false"
            f' for {settings.gateway.base_url}, got "true"'
        )
    return settings
