"""Hooks get their context as an argument (gateway.interfaces.HookContext), never through thread-locals."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import hookimpl
from gateway.interfaces import HookContext
from gateway.testing.events import EventRecorder
from gateway.testing.saml import GROUPS


@pytest.fixture
def gateway_database_url(database_url):
    """SQLite, then PostgreSQL (tests/conftest.py)."""
    return database_url


class Spy:
    def __init__(self):
        self.decisions = []
        self.events = []

    @hookimpl
    def gateway_provisioning_decide(self, context, identity, user, source):
        self.decisions.append((context, identity, user, source, context.request.dbsession))

    @hookimpl
    def gateway_user_event(self, context, event):
        self.events.append((context, event))


def spy_on(app) -> Spy:
    spy = Spy()
    app.app.registry.pm.register(spy)
    return spy


def test_a_saml_sign_in_gives_the_policy_its_context_and_the_whole_user(gateway_app, gateway_scim, gateway_sign_in):
    gateway_scim.create_user(
        "gina@example.com",
        title="Engineer",
        name={"givenName": "Gina"},
        **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}},
    )
    spy = spy_on(gateway_app)
    gateway_sign_in("gina@example.com", claims={GROUPS: ["g-1"]})
    ((context, identity, user, source, dbsession),) = spy.decisions
    registry = gateway_app.app.registry
    assert isinstance(context, HookContext) and source == "saml"
    assert context.registry is registry and context.settings is registry.gateway_settings
    assert context.ini["gateway.plugins"] == "entra sqlstore"
    assert context.dbsession is dbsession is not None
    assert identity.user_name == "gina@example.com" and identity.groups == ("g-1",)
    assert {k: user[k] for k in ("userName", "title", "department", "givenName", "provisioned_by")} == {
        "userName": "gina@example.com",
        "title": "Engineer",
        "department": "R&D",
        "givenName": "Gina",
        "provisioned_by": "scim",
    }
    assert [e.type for _, e in spy.events] == ["updated", "signed_in"]
    assert all(c.dbsession is dbsession and c.request is not None for c, _ in spy.events)
    assert not hasattr(spy.events[0][1], "dbsession")


def test_a_scim_create_gives_the_policy_and_the_event_their_context(gateway_app, gateway_scim):
    spy = spy_on(gateway_app)
    gateway_scim.create_user("hal@example.com", title="Manager")
    ((context, identity, user, source, _),) = spy.decisions
    assert source == "scim" and user is None and context.request is not None
    assert identity.user_name == "hal@example.com" and identity.profile["title"] == "Manager"
    assert identity.groups == () and identity.subject is None
    ((event_context, event),) = spy.events
    assert event.type == "created" and event.source == "scim" and event.actor == "scim:entra"
    assert event_context.dbsession is context.dbsession


def test_implementations_without_context_still_work(gateway_app, gateway_sign_in):
    recorder = EventRecorder().attach(gateway_app)  # its hook takes (event) alone
    gateway_sign_in("ivy@example.com")
    assert recorder.types() == ["created", "signed_in"]


def test_no_shipped_plugin_reaches_for_thread_locals():
    plugins = Path(__file__).parent.parent / "plugins"
    users = [p for p in plugins.rglob("*.py") if "threadlocal" in p.read_text()]
    assert users == []
