"""The gateway's seams with its dependencies: public APIs, and loud failures when they change.

Each test fails when the upstream behaviour the gateway builds on changes:
zope.sqlalchemy's session listeners (gateway/db/tm.py), pyramid_tm's request
method that the gateway overrides (gateway/db/__init__.py), pluggy's unknown
hooks (gateway/plugins.py), and ConfigError at the entry points.
"""

import textwrap

import pytest
import zope.sqlalchemy

from gateway import ConfigError, main, paste_app
from gateway.db import tm

# ---------------------------------------------------------------- zope.sqlalchemy


def test_zope_sqlalchemy_listens_to_the_events_the_gateway_relays():
    tm.check_seam.__wrapped__()


def test_the_seam_check_fails_when_register_listens_to_another_event(monkeypatch):
    def register(session, initial_state="active", transaction_manager=None, keep_session=False):
        from sqlalchemy import event

        ext = zope.sqlalchemy.ZopeTransactionEvents()
        for name in tm.SESSION_EVENTS:
            event.listen(session, name, getattr(ext, name))
        event.listen(session, "after_soft_rollback", ext.after_flush)
        return ext

    monkeypatch.setattr(zope.sqlalchemy, "register", register)
    with pytest.raises(RuntimeError, match="zope.sqlalchemy changed register"):
        tm.check_seam.__wrapped__()


def test_writes_outside_the_orm_commit_with_the_request(gateway_app, gateway_scim):
    # sqlstore writes with prepared statements, and tells zope.sqlalchemy it
    # wrote (gateway.db.tm.mark_changed): otherwise the request would roll back as read-only.
    created = gateway_scim.create_user("seam@example.com")
    assert gateway_scim.get(f"/Users/{created['id']}").json["userName"] == "seam@example.com"
    group = gateway_scim.create_group("Seam", members=[created["id"]])
    assert [m["value"] for m in gateway_scim.get(f"/Groups/{group['id']}").json["members"]] == [created["id"]]


# ---------------------------------------------------------------- pyramid_tm

PROBE_PLUGIN = """
    from gateway import hookimpl
    from gateway.request import GatewayRequest

    def probe(request):
        return {
            "own_class": type(request) is GatewayRequest,
            "tm_active": request.tm.get().status == "Active",
            "tm_reified": request.tm is request.tm,
        }

    @hookimpl
    def gateway_pyramid_configure(config):
        config.add_route("probe.index", "/probe")
        config.add_view(probe, route_name="probe.index", renderer="json")
"""


def test_requests_are_the_gateways_own_class_with_pyramid_tm_included(make_app, plugin_dir):
    # pyramid_tm's includeme adds request.tm as a request method, which makes
    # Pyramid build a class per request; gateway.db overrides it with none.
    (plugin_dir / "gw_test_probe.py").write_text(textwrap.dedent(PROBE_PLUGIN))
    app = make_app(**{"gateway.plugins": "entra gw_test_probe"})
    assert app.get("/probe").json == {"own_class": True, "tm_active": True, "tm_reified": True}


# ---------------------------------------------------------------- pluggy


def test_an_optional_hook_of_a_later_gateway_is_accepted(make_app, plugin_dir):
    (plugin_dir / "gw_test_optional.py").write_text(
        textwrap.dedent("""
        from gateway import hookimpl

        @hookimpl(optionalhook=True)
        def gateway_from_a_later_version(config):
            pass
    """)
    )
    make_app(**{"gateway.plugins": "entra gw_test_optional"})


def test_an_unknown_hook_is_named_with_its_plugin(make_app, plugin_dir):
    (plugin_dir / "gw_test_unknown.py").write_text(
        textwrap.dedent("""
        def gateway_user_evnt(context, event):
            pass
    """)
    )
    with pytest.raises(ConfigError) as info:
        make_app(**{"gateway.plugins": "entra gw_test_unknown"})
    assert str(info.value) == (
        'gateway.plugins: plugin "gw_test_unknown" implements "gateway_user_evnt", which is not a gateway hook'
        " (see gateway/hookspecs.py for the names)"
    )


# ---------------------------------------------------------------- ConfigError


def test_config_error_is_an_ordinary_exception():
    assert issubclass(ConfigError, Exception) and not issubclass(ConfigError, SystemExit)


def test_the_app_factory_pserve_loads_exits_with_the_line(base_settings, sqlite_url):
    settings = {**base_settings, "sqlalchemy.url": sqlite_url, "saml.clock_skew": "ten"}
    with pytest.raises(ConfigError) as raised:
        main({}, **settings)
    with pytest.raises(SystemExit) as exited:
        paste_app({"__file__": "gateway.ini", "here": "."}, **settings)
    assert exited.value.code == str(raised.value)
    assert str(raised.value).startswith("saml.clock_skew: ")


# ---------------------------------------------------------------- Pyramid, for forward-auth's fast path

DERIVER_PLUGIN = """
    def stamped(view, info):
        def wrapped(context, request):
            response = view(context, request)
            response.headers["X-Plugin"] = "seen"
            return response
        return wrapped

    def gateway_pyramid_configure(config):
        config.add_view_deriver(stamped)
"""


def test_a_plugins_view_deriver_sees_every_forward_auth_check(make_app, idp, plugin_dir):
    # The fast path answers /auth before Pyramid only when Pyramid's set-up
    # (tweens, view derivers, as its introspector lists them) is the core's own.
    from saml_support import sign_in

    (plugin_dir / "gw_test_deriver.py").write_text(textwrap.dedent(DERIVER_PLUGIN))
    app = make_app(**{"gateway.plugins": "entra gw_test_deriver"})
    sign_in(app, idp)
    for _ in range(3):
        assert app.get("/auth", extra_environ={"REMOTE_ADDR": "127.0.0.1"}).headers.get("X-Plugin") == "seen"
