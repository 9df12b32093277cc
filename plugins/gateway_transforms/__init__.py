"""Attribute transforms shipped with the gateway (entry point ``transforms``).

Enable the plugin, then list the transforms to run, in order::

    gateway.plugins = entra sqlstore transforms
    attributes.transforms = lowercase_email map_values compose_display_name
    map_values.department =
        100 = Sales
        200 = Engineering

- ``lowercase_email``: the email in lower case (Entra keeps the case an admin
  typed; downstream apps often compare emails byte for byte).
- ``map_values``: replace values of a profile field by a table from the ini,
  ``map_values.<field>`` with one ``from = to`` per line (``from`` compared
  case-insensitively); ``<field>`` is a profile field (``department``,
  ``title``, ...) or ``custom.<name>``. Values not in the table stay as they are.
- ``compose_display_name``: when neither source gives a display name, make
  one from the given and family names.

Each is idempotent: applying it twice gives what applying it once gave, so
recomputing the profile on every update is safe.
"""

from __future__ import annotations

from functools import lru_cache

from gateway import ConfigError, hookimpl
from gateway.interfaces import AttributeTransform, PluginSetting

PREFIX = "map_values."
FIELDS = ("display_name", "given_name", "family_name", "email", "title", "department")


def lowercase_email(profile: dict, context) -> dict:
    email = profile.get("email")
    if isinstance(email, str):
        profile["email"] = email.strip().lower()
    return profile


def _parse_table(key: str, raw: str) -> dict[str, str]:
    field = key[len(PREFIX) :]
    if field not in FIELDS and not (field.startswith("custom.") and len(field) > len("custom.")):
        raise ConfigError(
            f'{key}: unknown profile field "{field}"; expected one of {", ".join(FIELDS)} or custom.<name>'
        )
    table = {}
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, sep, target = line.partition("=")
        if not sep or not source.strip():
            raise ConfigError(f'{key}: expected one "from = to" per line, got "{line}"')
        table[source.strip().lower()] = target.strip()
    if not table:
        raise ConfigError(f'{key}: expected one "from = to" per line, got nothing')
    return table


@lru_cache(maxsize=32)
def _tables(items: tuple[tuple[str, str], ...]) -> dict[str, dict[str, str]]:
    return {key[len(PREFIX) :]: _parse_table(key, raw) for key, raw in items}


def tables(settings) -> dict[str, dict[str, str]]:
    """{field: {from (lower case): to}} from the ``map_values.*`` settings (parsed once)."""
    return _tables(tuple(sorted((k, str(v)) for k, v in settings.items() if k.startswith(PREFIX))))


def map_values(profile: dict, context) -> dict:
    for field, table in tables(context.settings).items():
        if field.startswith("custom."):
            holder, name = profile.setdefault("custom", {}), field[len("custom.") :]
        else:
            holder, name = profile, field
        value = holder.get(name)
        if isinstance(value, str) and value.strip().lower() in table:
            holder[name] = table[value.strip().lower()]
    return profile


def compose_display_name(profile: dict, context) -> dict:
    if not profile.get("display_name"):
        parts = [profile.get("given_name"), profile.get("family_name")]
        composed = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        if composed:
            profile["display_name"] = composed
    return profile


@hookimpl
def gateway_attribute_transforms():
    return [
        AttributeTransform("lowercase_email", lowercase_email),
        AttributeTransform("map_values", map_values),
        AttributeTransform("compose_display_name", compose_display_name),
    ]


@hookimpl
def gateway_plugin_settings():
    # Each table is checked below, where its field is known.
    return [
        PluginSetting(PREFIX + "*", default=None, help="the map_values table of one profile field: from = to pairs")
    ]


@hookimpl
def gateway_pyramid_configure(config):
    # Check the tables at start-up, so a typo stops the gateway rather than a sign-in.
    found = tables(config.registry.settings)
    if "map_values" in config.registry.gateway_settings.attributes.transforms and not found:
        raise ConfigError(
            "attributes.transforms: map_values is listed but no map_values.<field> setting says what to map"
        )
