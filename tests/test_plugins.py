"""Plugins load only when the ini names them, and misspellings stop start-up."""

import textwrap

import pytest

from gateway import ConfigError


def write_module(directory, name, source):
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


BRIDGE_PLUGIN = """
    from gateway import hookimpl

    def hello(request):
        return {"hello": request.registry.gateway_settings.gateway.base_url}

    @hookimpl
    def gateway_pyramid_configure(config):
        config.add_route("hello.index", "/hello")
        config.add_view(hello, route_name="hello.index", renderer="json")
"""


def test_pyramid_configure_bridge_adds_a_route(make_app, plugin_dir):
    write_module(plugin_dir, "gw_test_bridge", BRIDGE_PLUGIN)
    app = make_app(**{"gateway.plugins": "entra gw_test_bridge"})
    assert app.get("/hello").json == {"hello": "http://localhost"}


def test_installed_but_unnamed_plugin_stays_off(make_app, plugin_dir):
    write_module(plugin_dir, "gw_test_sneaky", BRIDGE_PLUGIN)
    dist = plugin_dir / "gw_test_sneaky-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gw-test-sneaky\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gateway]\nsneaky = gw_test_sneaky\n")

    app = make_app()
    app.get("/hello", status=404)

    app = make_app(**{"gateway.plugins": "entra sneaky"})
    assert app.get("/hello").status_int == 200


def test_unknown_plugin_stops_start_up(make_app):
    with pytest.raises(ConfigError) as info:
        make_app(**{"gateway.plugins": "entra no_such_plugin"})
    assert str(info.value).startswith('gateway.plugins: unknown plugin "no_such_plugin"')


def test_misspelled_hook_stops_start_up(make_app, plugin_dir):
    write_module(
        plugin_dir,
        "gw_test_typo",
        """
        from gateway import hookimpl

        @hookimpl
        def gateway_user_evnt(event):
            pass
        """,
    )
    with pytest.raises(ConfigError) as info:
        make_app(**{"gateway.plugins": "gw_test_typo"})
    assert str(info.value) == (
        'gateway.plugins: plugin "gw_test_typo" implements "gateway_user_evnt", which is not a gateway hook'
        " (see gateway/hookspecs.py for the names)"
    )


def test_unmarked_misspelled_hook_is_caught_too(make_app, plugin_dir):
    write_module(plugin_dir, "gw_test_unmarked", "def gateway_pyramid_configur(config):\n    pass\n")
    with pytest.raises(ConfigError, match='implements "gateway_pyramid_configur"'):
        make_app(**{"gateway.plugins": "gw_test_unmarked"})


def test_wrong_hook_arguments_stop_start_up(make_app, plugin_dir):
    write_module(plugin_dir, "gw_test_args", "def gateway_user_event(evt):\n    pass\n")
    with pytest.raises(ConfigError, match='plugin "gw_test_args" is invalid'):
        make_app(**{"gateway.plugins": "gw_test_args"})


def test_plugin_listed_twice(make_app):
    with pytest.raises(ConfigError, match='"entra" is listed twice'):
        make_app(**{"gateway.plugins": "entra entra"})


def test_broken_plugin_import_is_not_reported_as_unknown(make_app, plugin_dir):
    write_module(plugin_dir, "gw_test_broken", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        make_app(**{"gateway.plugins": "gw_test_broken"})


def test_entra_profile_is_registered(make_app):
    app = make_app()
    profiles = [p for result in app.app.registry.pm.hook.gateway_idp_profiles() for p in result]
    entra = {p.name: p for p in profiles}["entra"]
    assert entra.subject_claim == "http://schemas.microsoft.com/identity/claims/objectidentifier"
    assert entra.claim_map["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"] == "email"
