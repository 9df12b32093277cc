"""Declared plugin settings (gateway_plugin_settings): checked like core keys, listed in the docs."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gateway import ConfigError, hookimpl  # noqa: F401 - hookimpl used by the written plugin

CONFIGURATION = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
ACME = """
from gateway import hookimpl
from gateway.interfaces import PluginSetting
from gateway.settings import integer


@hookimpl
def gateway_plugin_settings():
    return [
        PluginSetting("acme.events_file", help="where the events go"),
        PluginSetting("acme.batch", integer(1, 100), default=10, help="events a write"),
        PluginSetting("acme.route.*", help="one route a key"),
    ]
"""


def shipped_declarations():
    found = []
    for ep in entry_points(group="gateway"):
        declare = getattr(ep.load(), "gateway_plugin_settings", None)
        if declare is not None:
            found += [(ep.name, item) for item in declare()]
    return found


@pytest.mark.parametrize("plugin, item", shipped_declarations(), ids=lambda v: getattr(v, "name", v))
def test_every_shipped_plugin_setting_has_a_row_in_the_configuration_reference(plugin, item):
    key = item.name[:-1] + "<field>" if item.name.endswith(".*") else item.name
    assert re.search(rf"^\| `{re.escape(key)}` \| `{plugin}` \|", CONFIGURATION, re.M), (
        f"docs/configuration.md lacks {key}"
    )


@pytest.fixture
def acme(plugin_dir, gateway_settings):
    (plugin_dir / "gw_test_acme.py").write_text(ACME)
    gateway_settings["gateway.plugins"] += " gw_test_acme"
    gateway_settings["acme.events_file"] = "/tmp/events.jsonl"
    return gateway_settings


def test_declared_settings_are_parsed_with_their_defaults(acme, gateway_make_app):
    registry = gateway_make_app(**{"acme.route.home": "/home"}).app.registry
    assert registry.plugin_settings == {
        "acme.events_file": "/tmp/events.jsonl",
        "acme.batch": 10,
        "acme.route.home": "/home",
    }


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"acme.event_file": "x"}, 'acme.event_file: unknown setting (did you mean "acme.events_file"?)'),
        ({"acme.batch": "1000"}, "acme.batch:"),
        ({"acme.events_file": None}, "acme.events_file: required setting is missing"),
    ],
)
def test_an_unknown_missing_or_bad_plugin_setting_stops_start_up(acme, gateway_make_app, settings, message):
    with pytest.raises(ConfigError) as info:
        gateway_make_app(**settings)
    assert str(info.value).startswith(message)


def test_keys_of_a_plugin_that_is_off_are_left_alone(gateway_make_app):
    gateway_make_app(**{"seat_limit.max_user": "3"})  # seat_limit is not enabled


def test_a_shipped_plugin_refuses_a_misspelt_key(gateway_make_app):
    with pytest.raises(ConfigError) as info:
        gateway_make_app(
            **{"gateway.plugins": "entra sqlstore seat_limit", "seat_limit.max_users": "3", "seat_limit.max_user": "3"}
        )
    assert str(info.value) == 'seat_limit.max_user: unknown setting (did you mean "seat_limit.max_users"?)'


def test_a_plugin_may_not_declare_under_a_core_prefix(plugin_dir, gateway_make_app):
    (plugin_dir / "gw_test_core.py").write_text(ACME.replace('"acme.events_file"', '"saml.acme"'))
    with pytest.raises(ConfigError, match='declares the setting "saml.acme"'):
        gateway_make_app(**{"gateway.plugins": "entra sqlstore gw_test_core"})


def test_check_names_the_unknown_plugin_setting(tmp_path, sqlite_url):
    from scim_support import run_cli, write_ini

    ini = write_ini(
        tmp_path / "gateway.ini",
        sqlite_url,
        6543,
        **{
            "gateway.plugins": "entra devidp sqlstore seat_limit",
            "seat_limit.max_users": "5",
            "seat_limit.maxusers": "5",
        },
    )
    result = run_cli(ini, "check", check=False)
    assert result.returncode == 1
    assert 'FAIL settings: seat_limit.maxusers: unknown setting (did you mean "seat_limit.max_users"?)' in result.stdout
