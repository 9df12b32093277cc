"""The ``acme_level`` transform: a custom attribute ``level`` derived from the job title.

List it in ``attributes.transforms``. The first line of ``acme.levels``
whose words are in the title gives the level; a title that matches none, or
no title, gives ``acme.default_level``. The level depends on the title alone,
so applying the transform twice gives what applying it once gave, as the
gateway requires (it recomputes the profile on every update, SAML or SCIM).
Downstream apps see it as ``level`` in ``/whoami`` and, when
``forward_auth.headers`` lists it, as a header.
"""

from __future__ import annotations

from functools import lru_cache

from gateway import hookimpl
from gateway.interfaces import AttributeTransform
from gateway.settings import read_setting

from .settings import DEFAULT_LEVEL, DEFAULT_LEVELS, LEVELS, parse_level, parse_levels


@lru_cache(maxsize=8)
def _rules(levels: str | None, default: str | None):
    # A transform gets the raw ini settings; parse them once, with the declared parsers.
    raw = {LEVELS: levels, DEFAULT_LEVEL: default}
    return (
        read_setting(raw, LEVELS, parse_levels, parse_levels(DEFAULT_LEVELS)),
        read_setting(raw, DEFAULT_LEVEL, parse_level, "staff"),
    )


def level_of(title: str | None, settings) -> str:
    table, default = _rules(settings.get(LEVELS), settings.get(DEFAULT_LEVEL))
    for pattern, level in table:
        if title and pattern.search(title):
            return level
    return default


def acme_level(profile: dict, context) -> dict:
    profile.setdefault("custom", {})["level"] = level_of(profile.get("title"), context.settings)
    return profile


@hookimpl
def gateway_attribute_transforms():
    return [AttributeTransform("acme_level", acme_level)]
