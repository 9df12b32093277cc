"""The plugin manager: only what the ini names is loaded.

This is an auth service, so nothing turns on by being installed. Each name in
``gateway.plugins`` resolves to an entry point in group ``gateway`` or else to
an importable dotted module path; anything else stops start-up. Every
``gateway_*`` function of a plugin is taken as a hook implementation even
without ``@hookimpl``, so a misspelled hook name is an error, not a silent
no-op.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError


class GatewayPluginManager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("gateway_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


def _resolve(name: str) -> Any:
    found = entry_points(group="gateway", name=name)
    for ep in found:
        return ep.load()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f'gateway.plugins: unknown plugin "{name}" (no entry point in group "gateway"'
                " and no importable module of that name)"
            ) from None
        raise


def core_plugins(settings) -> dict[str, Any]:
    """The core's own hook implementations: shipped defaults, all trylast."""
    from .provisioning.policy import ModePolicy

    return {"gateway.provisioning.policy": ModePolicy(settings.provisioning.mode)}


def build_plugin_manager(settings) -> GatewayPluginManager:
    pm = GatewayPluginManager("gateway")
    pm.add_hookspecs(hookspecs)
    for name, plugin in core_plugins(settings).items():
        pm.register(plugin, name=name)
    for name in settings.gateway.plugins:
        if pm.has_plugin(name):
            raise ConfigError(f'gateway.plugins: "{name}" is listed twice')
        plugin = _resolve(name)
        try:
            pm.register(plugin, name=name)
        except ValueError as exc:
            raise ConfigError(f'gateway.plugins: "{name}" cannot be registered: {exc}') from None
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f'gateway.plugins: plugin "{name}" is invalid: {exc}') from None
    _refuse_unknown_hooks(pm)
    return pm


def _refuse_unknown_hooks(pm: GatewayPluginManager) -> None:
    """pluggy's ``check_pending``, naming the plugin and the hook from pluggy's
    public API (its exception carries only the plugin, the hook is in its text)."""
    for plugin in pm.get_plugins():
        for caller in pm.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
                raise ConfigError(
                    f'gateway.plugins: plugin "{pm.get_name(plugin)}" implements "{caller.name}", which is not a'
                    " gateway hook (see gateway/hookspecs.py for the names)"
                )
    try:
        pm.check_pending()  # anything else pluggy refuses, in its own words
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"gateway.plugins: {' '.join(str(exc).split())}") from None


def collect(hook_results: list[list[Any]], what: str) -> dict[str, Any]:
    """Merge the lists returned by a registration hook into {name: descriptor}."""
    registry: dict[str, Any] = {}
    for result in hook_results:
        for item in result or ():
            if item.name in registry:
                raise ConfigError(f'gateway.plugins: two plugins register the {what} "{item.name}"')
            registry[item.name] = item
    return registry


def includeme(config):
    settings = config.registry.gateway_settings
    pm = build_plugin_manager(settings)
    config.registry.pm = pm
    # The settings plugins declare, checked like the core's before any plugin configures itself.
    from .plugin_settings import parse_plugin_settings

    config.registry.plugin_settings = parse_plugin_settings(pm, config.registry.settings)
