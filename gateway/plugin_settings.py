"""Plugin settings: what plugins declare through ``gateway_plugin_settings``, checked at start-up.

The core keys are :mod:`gateway.settings`'s; this extends the same rules to
the keys plugins declare: parsed once with the declared parser (a bad value
raises ConfigError naming the key), a missing required key stops start-up,
and a key under a declared prefix that no declaration names is an unknown
setting, with a suggestion, like a misspelt core key.
"""

from __future__ import annotations

import difflib
from typing import Any

from .errors import ConfigError
from .interfaces import REQUIRED, PluginSetting
from .settings import SECTIONS, _parse_value, read_setting


def declarations(pm) -> dict[str, tuple[str, PluginSetting]]:
    """{key: (plugin name, declaration)} of the enabled plugins; ConfigError on a clash or a bad name."""
    found: dict[str, tuple[str, PluginSetting]] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.gateway_plugin_settings.get_hookimpls():
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
        for item in impl.function() or ():
            prefix, dot, rest = item.name.partition(".")
            if not dot or not rest or prefix in SECTIONS:
                raise ConfigError(
                    f'gateway.plugins: plugin "{plugin}" declares the setting "{item.name}": a plugin setting is'
                    " <prefix>.<name> under a prefix of its own, not a core one"
                )
            if owners.setdefault(prefix, plugin) != plugin:
                raise ConfigError(
                    f'gateway.plugins: plugins "{owners[prefix]}" and "{plugin}" both declare settings under "{prefix}."'
                )
            if item.name in found:
                raise ConfigError(f'gateway.plugins: plugin "{plugin}" declares "{item.name}" twice')
            found[item.name] = (plugin, item)
    return found


def parse_plugin_settings(pm, raw: dict[str, Any]) -> dict[str, Any]:
    """The declared settings' values by key; ConfigError on an unknown, missing or bad one."""
    declared = declarations(pm)
    prefixes = {name.split(".", 1)[0] for name in declared}
    exact = sorted(name for name in declared if not name.endswith(".*"))
    open_ended = [name[:-1] for name in declared if name.endswith(".*")]
    for key in sorted(raw):
        if key.split(".", 1)[0] not in prefixes or key in exact:
            continue
        if any(key.startswith(stem) and len(key) > len(stem) for stem in open_ended):
            continue
        hint = difflib.get_close_matches(key, exact + [stem + "<name>" for stem in open_ended], n=1)
        suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(f"{key}: unknown setting{suggestion}")
    values: dict[str, Any] = {}
    for name, (_, item) in declared.items():
        if name.endswith(".*"):
            stem = name[:-1]
            for key in sorted(k for k in raw if k.startswith(stem) and len(k) > len(stem)):
                values[key] = _parse_value(key, raw[key], item.parse)
        elif item.default is REQUIRED:
            values[name] = read_setting(raw, name, item.parse)
        else:
            values[name] = read_setting(raw, name, item.parse, item.default)
    return values
