"""Events after commit (gateway_event_committed), group events, and the SCIM refusal's denied event.

On SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import pytest
import transaction.interfaces

from gateway import hookimpl


@pytest.fixture
def gateway_database_url(database_url):
    return database_url


class FailOnce:
    """An in-transaction listener that raises ``error`` the first time it sees ``on``."""

    def __init__(self, on: str, error: Exception, times: int = 1):
        self.on, self.error, self.times = on, error, times

    @hookimpl(trylast=True)  # after the recorder
    def gateway_user_event(self, event):
        if event.type == self.on and self.times:
            self.times -= 1
            raise self.error


def test_committed_user_events_follow_the_commit(gateway_scim, gateway_events):
    created = gateway_scim.create_user("jo@example.com")
    gateway_scim.patch_ops(f"/Users/{created['id']}", {"op": "replace", "path": "active", "value": False})
    assert gateway_events.committed_types() == ["created", "deactivated"]
    assert gateway_events.committed[0] is gateway_events.events[0]


def test_a_rolled_back_request_announces_nothing(gateway_app, gateway_scim, gateway_events):
    gateway_app.app.registry.pm.register(FailOnce("created", RuntimeError("sink down")))
    gateway_scim.post(
        "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "kim@example.com"}, status=500
    )
    assert gateway_events.types() == ["created"]  # seen in the transaction ...
    assert gateway_events.committed == []  # ... which was rolled back
    assert gateway_scim.get("/Users").json["totalResults"] == 0


def test_a_retried_request_announces_its_change_once(gateway_app, gateway_sign_in, gateway_events):
    # A conflict-like error: pyramid_tm marks it retryable and pyramid_retry runs the request again.
    gateway_app.app.registry.pm.register(FailOnce("signed_in", transaction.interfaces.TransientError("conflict")))
    gateway_sign_in("lee@example.com")  # a first sign-in: the groups claim creates and fills "Staff"
    assert gateway_events.types() == ["created", "signed_in", "created", "signed_in"]  # both attempts
    assert [e.type for e in gateway_events.group_events] == ["created", "members_added"] * 2
    assert gateway_events.committed_types() == ["created", "group.created", "group.members_added", "signed_in"]
    assert gateway_app.get("/whoami").json["userName"] == "lee@example.com"


def test_a_rolled_back_sign_in_announces_nothing(gateway_app, gateway_sign_in, gateway_events):
    gateway_app.app.registry.pm.register(FailOnce("signed_in", RuntimeError("sink down")))
    with pytest.raises(RuntimeError):  # the test app lets an unexpected error through
        gateway_sign_in("max@example.com", status=500)
    assert gateway_events.types() == ["created", "signed_in"]
    assert gateway_events.committed == []  # neither the user's events nor the groups claim's
    gateway_sign_in("max@example.com")
    assert gateway_events.committed_types() == ["created", "group.created", "group.members_added", "signed_in"]


def test_group_changes_fire_group_events(gateway_scim, gateway_events):
    a = gateway_scim.create_user("a@example.com")["id"]
    b = gateway_scim.create_user("b@example.com")["id"]
    group = gateway_scim.create_group("Team", members=[a])
    gateway_scim.patch_ops(
        f"/Groups/{group['id']}", {"op": "add", "path": "members", "value": [{"value": b}]}, status="*"
    )
    gateway_scim.patch_ops(f"/Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{a}"]'}, status="*")
    gateway_scim.put(
        f"/Groups/{group['id']}",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Team 2",
            "members": [{"value": a}],
        },
    )
    gateway_scim.delete(f"/Groups/{group['id']}")
    seen = [(e.type, e.user_ids, e.display_name) for e in gateway_events.group_events]
    assert seen == [
        ("created", (), "Team"),
        ("members_added", (a,), "Team"),
        ("members_added", (b,), "Team"),
        ("members_removed", (a,), "Team"),
        ("updated", (), "Team 2"),
        ("members_added", (a,), "Team 2"),
        ("members_removed", (b,), "Team 2"),
        ("deleted", (), "Team 2"),
    ]
    assert gateway_events.group_events[4].changed == ("displayName",)
    assert [e.type for e in gateway_events.committed if hasattr(e, "group_id")] == [s[0] for s in seen]
    assert {e.actor for e in gateway_events.group_events} == {"scim:entra"}


def test_a_scim_refusal_fires_denied_and_announces_it(gateway_app, gateway_scim, gateway_events):
    from gateway.interfaces import Decision

    class NoContractors:
        @hookimpl
        def gateway_provisioning_decide(self, identity, source):
            if source == "scim" and identity.user_name.startswith("contractor"):
                return Decision.deny("Contractors are provisioned elsewhere")

    gateway_app.app.registry.pm.register(NoContractors())
    response = gateway_scim.post(
        "/Users",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "contractor@example.com"},
        status=403,
    )
    (denied,) = gateway_events.events
    assert denied.type == "denied" and denied.user_name == "contractor@example.com" and denied.source == "scim"
    assert denied.user_id is None and denied.reason == "Contractors are provisioned elsewhere"
    assert denied.reason in response.text
    assert gateway_events.committed == [denied]  # announced, though the refused request was rolled back


def test_a_retried_scim_write_reads_its_body_again(gateway_app, gateway_scim, gateway_events):
    # pyramid_retry copies the body before the first attempt; each attempt must read it from the start.
    gateway_app.app.registry.pm.register(FailOnce("created", transaction.interfaces.TransientError("conflict")))
    created = gateway_scim.post(
        "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ret@example.com"}
    ).json
    assert created["userName"] == "ret@example.com"
    assert gateway_events.committed_types() == ["created"]
