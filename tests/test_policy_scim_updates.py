"""The policy asked again on SCIM updates, reactivations and membership changes.

A reactivation the policy refuses is refused like a create (403, nothing
written, ``denied``); any other write it refuses is stored, as Entra says,
and the person loses their sessions and cannot sign in until it allows them
again. Through SCIM calls, real signed sign-ins and the shipped policy
plugins, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from gateway import hookimpl
from gateway.testing.events import EventRecorder
from gateway.testing.saml import XMLSOAP
from gateway.testing.scim import ENTERPRISE, scim_client
from gateway_allowed_groups import DENIED as NOT_IN_GROUP
from gateway_seat_limit import message as seat_message

EMAIL = XMLSOAP + "emailaddress"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ELSEWHERE = "Only people with an email address at example.com may use this application."


@pytest.fixture
def gateway_database_url(database_url):
    """SQLite, then PostgreSQL (tests/conftest.py)."""
    return database_url


@pytest.fixture
def gateway(gateway_make_app):
    """``gateway(plugins, **settings)``: (app, SCIM client, event recorder)."""

    def make(plugins: str, **settings):
        app = gateway_make_app(**{"gateway.plugins": f"entra sqlstore {plugins}", **settings})
        return app, scim_client(app), EventRecorder().attach(app)

    return make


def signed_in(app) -> bool:
    """Whether the browser's session still holds, for the app and for forward-auth alike."""
    whoami = app.get("/whoami", expect_errors=True).status_int
    auth = app.get("/auth", expect_errors=True).status_int
    assert (whoami == 200) == (auth == 200), (whoami, auth)
    return whoami == 200


def emails(address: str) -> list[dict]:
    return [{"value": address, "type": "work", "primary": True}]


def replace(path: str, value) -> dict:
    return {"op": "Replace", "path": path, "value": value}


# ---------------------------------------------------------------- allowed_domains: an update


def test_an_update_the_policy_refuses_is_stored_and_ends_the_sessions(gateway, gateway_sign_in):
    app, scim, events = gateway("allowed_domains", **{"allowed_domains.domains": "example.com"})
    alice = scim.create_user("alice@example.com", emails=emails("alice@example.com"))
    gateway_sign_in("alice@example.com", app=app)
    assert signed_in(app)
    events.clear()

    patched = scim.patch_ops(f"/Users/{alice['id']}", replace('emails[type eq "work"].value', "alice@elsewhere.test"))
    assert patched.json["emails"] == emails("alice@elsewhere.test")  # the directory mirrors Entra
    assert scim.get(f"/Users/{alice['id']}").json["emails"] == emails("alice@elsewhere.test")
    assert not signed_in(app)
    assert events.types() == ["updated", "denied"]
    denied = events.events[1]
    assert (denied.user_id, denied.source, denied.actor, denied.reason) == (
        alice["id"],
        "scim",
        "scim:entra",
        ELSEWHERE,
    )
    assert denied.changed == ("sessions",)
    assert events.committed_types() == ["updated", "denied"]

    # Until the policy allows again, the person cannot sign in ...
    refused = gateway_sign_in("alice@example.com", app=app, claims={EMAIL: "alice@elsewhere.test"}, status=403)
    assert ELSEWHERE in refused.text
    # ... and a deactivation is never asked about: it always goes through.
    scim.patch_ops(f"/Users/{alice['id']}", replace("active", "False"))
    scim.patch_ops(f"/Users/{alice['id']}", replace("active", "True"), status=403)  # nor is this one, yet
    scim.put(
        f"/Users/{alice['id']}",
        {
            "schemas": [USER_SCHEMA],
            "userName": "alice@example.com",
            "emails": emails("alice@example.com"),
            "active": True,
        },
    )
    gateway_sign_in("alice@example.com", app=app)
    assert signed_in(app)


def test_an_update_of_someone_without_a_session_is_stored_and_announces_nothing(gateway):
    app, scim, events = gateway("allowed_domains", **{"allowed_domains.domains": "example.com"})
    bob = scim.create_user("bob@example.com", emails=emails("bob@example.com"))
    events.clear()
    scim.patch_ops(f"/Users/{bob['id']}", replace('emails[type eq "work"].value', "bob@elsewhere.test"))
    assert events.types() == ["updated"]  # refused, but nothing was taken away: no denied


class BrokenSink:
    @hookimpl(trylast=True)  # after the recorder
    def gateway_user_event(self, event):
        if event.type == "denied":
            raise RuntimeError("sink down")


def test_a_rolled_back_write_ends_no_session_and_announces_no_denied(gateway, gateway_sign_in):
    app, scim, events = gateway("allowed_domains", **{"allowed_domains.domains": "example.com"})
    alice = scim.create_user("alice@example.com", emails=emails("alice@example.com"))
    gateway_sign_in("alice@example.com", app=app)
    app.app.registry.pm.register(BrokenSink())
    events.clear()
    scim.patch_ops(f"/Users/{alice['id']}", replace('emails[type eq "work"].value', "alice@elsewhere.test"), status=500)
    assert events.types() == ["updated", "denied"]  # seen in the transaction ...
    assert events.committed == []  # ... which was rolled back: this denied had ended sessions
    assert signed_in(app)
    assert scim.get(f"/Users/{alice['id']}").json["emails"] == emails("alice@example.com")


# ---------------------------------------------------------------- allowed_domains: a reactivation


def test_a_reactivation_the_policy_refuses_is_refused_like_a_create_and_writes_nothing(gateway):
    app, scim, events = gateway("allowed_domains", **{"allowed_domains.domains": "example.com"})
    create_refusal = scim.post("/Users", {"schemas": [USER_SCHEMA], "userName": "x@elsewhere.test"}, status=403).json
    bob = scim.create_user("bob@example.com", emails=emails("bob@example.com"), title="Clerk")
    scim.patch_ops(f"/Users/{bob['id']}", replace("active", "False"))
    before = scim.get(f"/Users/{bob['id']}").json
    events.clear()

    error = scim.patch_ops(
        f"/Users/{bob['id']}",
        replace("active", "True"),
        replace("title", "Manager"),
        replace('emails[type eq "work"].value', "bob@elsewhere.test"),
        status=403,
    ).json
    assert error["status"] == "403" and error["detail"] == ELSEWHERE
    assert set(error) == set(create_refusal)  # the same shape as a create's refusal (no scimType)
    assert scim.get(f"/Users/{bob['id']}").json == before  # nothing written, not even the title
    (denied,) = events.events
    assert (denied.type, denied.user_id, denied.user_name, denied.reason) == (
        "denied",
        bob["id"],
        "bob@example.com",
        ELSEWHERE,
    )
    assert events.committed == [denied]

    # Reactivated at an allowed address, it goes through.
    scim.patch_ops(f"/Users/{bob['id']}", replace("active", "True"))
    assert scim.get(f"/Users/{bob['id']}").json["active"] is True


# ---------------------------------------------------------------- seat_limit


def test_seat_limit_refuses_a_reactivation_beyond_the_limit(gateway, gateway_sign_in):
    app, scim, events = gateway("seat_limit", **{"seat_limit.max_users": "2"})
    scim.create_user("a@example.com")
    bea = scim.create_user("bea@example.com")
    scim.patch_ops(f"/Users/{bea['id']}", replace("active", "False"))  # frees a seat ...
    cid = scim.create_user("cid@example.com")  # ... which cid takes
    version = scim.get(f"/Users/{bea['id']}").json["meta"]["version"]

    error = scim.patch_ops(f"/Users/{bea['id']}", replace("active", "True"), status=403).json
    assert error["detail"] == seat_message(2)
    assert scim.get(f"/Users/{bea['id']}").json["meta"]["version"] == version
    assert events.types()[-1] == "denied"
    gateway_sign_in("bea@example.com", app=app, status=403)  # still deactivated

    scim.patch_ops(f"/Users/{cid['id']}", replace("active", "False"))
    scim.patch_ops(f"/Users/{bea['id']}", replace("active", "True"))
    gateway_sign_in("bea@example.com", app=app)
    assert signed_in(app)
    scim.patch_ops(f"/Users/{bea['id']}", replace("title", "Boss"))  # an update takes no seat
    assert signed_in(app)


# ---------------------------------------------------------------- allowed_groups: memberships


def remove_member(user_id: str) -> dict:
    return {"op": "Remove", "path": f'members[value eq "{user_id}"]'}


def add_member(user_id: str) -> dict:
    return {"op": "Add", "path": "members", "value": [{"value": user_id}]}


def test_a_user_taken_out_of_the_allowed_groups_loses_their_sessions(gateway, gateway_sign_in):
    app, scim, events = gateway("allowed_groups", **{"allowed_groups.groups": '"App Users"'})
    alice = scim.create_user("alice@example.com")
    group = scim.create_group("App Users", members=[alice["id"]])
    path = f"/Groups/{group['id']}"
    gateway_sign_in("alice@example.com", app=app, groups=())  # allowed by the stored membership
    assert signed_in(app)

    scim.patch_ops(path, remove_member(alice["id"]), status="*")
    assert not signed_in(app)
    denied = events.events[-1]
    assert (denied.type, denied.user_id, denied.reason, denied.source) == ("denied", alice["id"], NOT_IN_GROUP, "scim")
    assert "You are not in a group" in gateway_sign_in("alice@example.com", app=app, groups=(), status=403).text

    # Allowed again once Entra adds them back.
    scim.patch_ops(path, add_member(alice["id"]), status="*")
    gateway_sign_in("alice@example.com", app=app, groups=())
    assert signed_in(app)

    # A PUT that replaces the members, a rename and a delete take the group away too.
    scim.put(
        path, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "App Users", "members": []}
    )
    assert not signed_in(app)
    scim.patch_ops(path, add_member(alice["id"]), status="*")
    gateway_sign_in("alice@example.com", app=app, groups=())
    scim.patch_ops(path, replace("displayName", "Former App Users"), status="*")
    assert not signed_in(app)
    scim.patch_ops(path, replace("displayName", "App Users"), status="*")
    gateway_sign_in("alice@example.com", app=app, groups=())
    scim.delete(path)
    assert not signed_in(app)
    assert scim.get(f"/Users/{alice['id']}").json.get("active") is not False  # the account stays, as Entra has it


def test_allowed_groups_never_refuses_over_scim_someone_the_claim_alone_allows(gateway, gateway_sign_in):
    # A tenant that provisions users over SCIM but lets the groups claim say who may sign in.
    app, scim, events = gateway("allowed_groups", **{"allowed_groups.groups": "5f1c0000-0000-4000-8000-000000000001"})
    carol = scim.create_user("carol@example.com")
    gateway_sign_in("carol@example.com", app=app, groups=("5f1c0000-0000-4000-8000-000000000001",))
    staff = scim.create_group("Staff", members=[carol["id"]])
    scim.patch_ops(f"/Users/{carol['id']}", replace("title", "Engineer"))
    scim.patch_ops(f"/Groups/{staff['id']}", remove_member(carol["id"]), status="*")
    assert signed_in(app)
    assert "denied" not in events.types()


# ---------------------------------------------------------------- what the policy is given


class Spy:
    """A policy that answers nothing and keeps what it was asked."""

    def __init__(self):
        self.asked = []

    @hookimpl
    def gateway_provisioning_decide(self, identity, user, source):
        self.asked.append((identity, user, source))


def test_the_policy_gets_the_user_before_and_the_identity_after_each_change(gateway_make_app):
    app = gateway_make_app()
    scim = scim_client(app)
    spy = Spy()
    app.app.registry.pm.register(spy)

    dan = scim.create_user("dan@example.com", title="Clerk", **{ENTERPRISE: {"department": "Sales"}})
    ((identity, user, source),) = spy.asked
    assert source == "scim" and user is None and identity.groups == ()  # a new user is in no group yet

    team = scim.create_group("Team", members=[dan["id"]])
    (identity, user, _) = spy.asked[-1]
    assert user["groups"] == [] and identity.groups == ("Team",)  # before and after the membership
    assert user["title"] == identity.profile["title"] == "Clerk" and user["active"] is True

    spy.asked.clear()
    scim.patch_ops(f"/Users/{dan['id']}", replace("title", "Manager"))
    ((identity, user, _),) = spy.asked
    assert (user["title"], identity.profile["title"]) == ("Clerk", "Manager")
    assert user["groups"] == ["Team"] and identity.groups == ("Team",)  # truthful: the stored groups
    assert identity.profile["department"] == user["department"] == "Sales"

    spy.asked.clear()
    scim.patch_ops(f"/Users/{dan['id']}", replace("externalId", "e-1"))  # not part of the identity
    scim.patch_ops(f"/Users/{dan['id']}", replace("active", "False"))  # a deactivation always goes through
    scim.patch_ops(
        f"/Groups/{team['id']}", replace("displayName", "Crew"), status="*"
    )  # dan is inactive: nothing to end
    assert spy.asked == []
    scim.patch_ops(f"/Users/{dan['id']}", replace("active", "True"))
    ((identity, user, _),) = spy.asked
    assert user["active"] is False and identity.groups == ("Crew",)  # a reactivation

    spy.asked.clear()
    scim.patch_ops(f"/Groups/{team['id']}", replace("externalId", "g-crew"), status="*")
    ((identity, user, _),) = spy.asked
    assert user["groups"] == ["Crew"] and identity.groups == ("Crew", "g-crew")


# ---------------------------------------------------------------- group events from SAML claims


def test_memberships_from_the_groups_claim_fire_group_events(gateway_make_app, gateway_sign_in):
    app = gateway_make_app(**{"provisioning.mode": "first_login"})
    events = EventRecorder().attach(app)
    gateway_sign_in("eve@example.com", app=app, groups=("g-a", "g-b"))
    eve = app.get("/whoami").json["id"]
    seen = [(e.type, e.display_name, e.user_ids) for e in events.group_events]
    assert seen == [
        ("created", "g-a", ()),
        ("created", "g-b", ()),
        ("members_added", "g-a", (eve,)),
        ("members_added", "g-b", (eve,)),
    ]
    assert {(e.actor, e.source) for e in events.group_events} == {("user:eve@example.com", "saml")}
    assert events.committed_types() == ["created", *(f"group.{t}" for t, _, _ in seen), "signed_in"]

    events.clear()
    gateway_sign_in("eve@example.com", app=app, groups=("g-b", "g-c"))
    seen = [(e.type, e.display_name, e.user_ids) for e in events.group_events]
    assert seen == [("created", "g-c", ()), ("members_added", "g-c", (eve,)), ("members_removed", "g-a", (eve,))]
    assert events.committed[-1].type == "signed_in" and len(events.committed) == 4

    events.clear()
    gateway_sign_in("eve@example.com", app=app, groups=("g-c", "g-b"))  # the same groups: no event
    assert events.group_events == []
