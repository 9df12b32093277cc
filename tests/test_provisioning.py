"""Provisioning at SAML sign-in: modes, matching and linking, profile sync, groups, admins.

Every sign-in here is a real signed response from the test IdP through
``/saml/acs``; SCIM-provisioned users are made with real SCIM requests.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from gateway.db.models import Group, GroupMember, User
from gateway.provisioning.groups import OVERAGE_WARNING
from gateway.provisioning.policy import NOT_ASSIGNED, SCIM_DISABLED
from gateway.provisioning.signin import SUBJECT_TAKEN
from saml_support import MICROSOFT, post_response, sign_in, start_login
from scim_support import ENTERPRISE, ScimClient, make_token

OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"
OTHER_OID = "e1f6c0a4-2b7d-4d55-9c43-3f7d0c1c9b10"
GROUPS_LINK = "http://schemas.microsoft.com/claims/groups.link"


def users(app) -> list[User]:
    with app.app.registry.dbsession_factory() as db:
        return db.scalars(sa.select(User).order_by(User.user_name_key)).all()


def memberships(app, user_name: str) -> set[str]:
    with app.app.registry.dbsession_factory() as db:
        return set(
            db.scalars(
                sa.select(Group.external_id)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .join(User, User.id == GroupMember.user_id)
                .where(User.user_name_key == user_name.lower())
            )
        )


def refused(app, idp, name="alice@example.com", **kwargs):
    response = post_response(app, idp.response(start_login(app), name_id=name, **kwargs), status=403)
    assert response.headers["X-Reason"] == "denied"
    return response


@pytest.fixture
def events():
    return []


@pytest.fixture
def record_events(events):
    def register(app):
        from gateway import hookimpl

        class Recorder:
            @hookimpl
            def gateway_user_event(self, event):
                events.append((event.type, event.user_name, event.changed, event.reason))

        app.app.registry.pm.register(Recorder())
        return app

    return register


def scim_client(app) -> ScimClient:
    return ScimClient(app, make_token(app))


# ---------------------------------------------------------------- modes


def test_scim_mode_refuses_an_unknown_person_and_creates_nothing(make_app, idp, record_events, events):
    app = record_events(make_app(**{"provisioning.mode": "scim"}))
    response = refused(app, idp)
    assert NOT_ASSIGNED in response.text
    assert users(app) == []
    assert events == [("denied", "alice@example.com", (), NOT_ASSIGNED)]


def test_first_login_creates_the_user_from_the_claims(make_app, idp):
    app = make_app(**{"provisioning.mode": "first_login"})
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    (user,) = users(app)
    assert (user.user_name, user.idp_subject, user.provisioned_by) == ("alice@example.com", OID, "saml")
    assert app.get("/whoami").json["displayName"] == "Alice Example"


def test_first_login_mode_refuses_scim_creates(make_app, scim_settings):
    app = make_app(**scim_settings, **{"provisioning.mode": "first_login"})
    error = scim_client(app).post("/Users", {"userName": "bob@example.com"}, status=403).json
    assert error["detail"] == SCIM_DISABLED
    assert users(app) == []


def test_deactivated_users_never_sign_in_in_any_mode(make_app, idp):
    for mode in ("scim", "first_login", "scim first_login"):
        app = make_app(**{"provisioning.mode": mode})
        with app.app.registry.dbsession_factory() as db, db.begin():
            db.execute(sa.delete(User))
            db.add(
                User(user_name="alice@example.com", user_name_key="alice@example.com", active=False, idp_subject=OID)
            )
        assert "deactivated" in refused(app, idp).text
        app.get("/whoami", status=401)


# ---------------------------------------------------------------- matching and linking


def test_scim_user_is_matched_by_user_name_then_linked_to_the_subject(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"provisioning.mode": "scim"})
    created = scim_client(app).create_user("Alice@Example.com", displayName="Alice SCIM")
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    (user,) = users(app)
    assert user.id == created["id"] and user.idp_subject == OID

    # Renamed in Entra (new UPN and email), the same object id: still the same user.
    app.reset()
    sign_in(app, idp, "alice.new@example.com", attributes=idp.claims("alice.new@example.com", oid=OID))
    assert [u.id for u in users(app)] == [created["id"]]
    assert app.get("/whoami").json["id"] == created["id"]


def test_scim_user_is_matched_by_external_id_holding_the_object_id(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"provisioning.mode": "scim"})
    created = scim_client(app).create_user("a.smith@corp.example", externalId=OID)
    sign_in(app, idp, "alice@example.com", attributes=idp.claims("alice@example.com", oid=OID))
    assert app.get("/whoami").json["id"] == created["id"]


def test_match_on_email_only(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"provisioning.mode": "scim", "provisioning.match_on": "email"})
    created = scim_client(app).create_user("asmith", emails=[{"value": "Alice@Example.com", "type": "work"}])
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    assert app.get("/whoami").json["id"] == created["id"]


def test_two_users_with_the_same_email_are_not_guessed_between(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"provisioning.mode": "scim", "provisioning.match_on": "email"})
    scim = scim_client(app)
    for name in ("asmith", "alice2"):
        scim.create_user(name, emails=[{"value": "alice@example.com", "type": "work"}])
    assert NOT_ASSIGNED in refused(app, idp).text


def test_a_reused_user_name_does_not_take_over_the_old_owners_account(make_app, idp, record_events, events):
    # Entra gives a deleted person's UPN to someone new; the new person has another object id.
    app = record_events(make_app())
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    app.reset()
    response = refused(app, idp, attributes=idp.claims("alice@example.com", oid=OTHER_OID))
    assert SUBJECT_TAKEN in response.text
    (user,) = users(app)
    assert user.idp_subject == OID
    assert events[-1] == ("denied", "alice@example.com", (), SUBJECT_TAKEN)


def test_first_login_user_is_found_by_entra_and_never_twinned(make_app, scim_settings, idp):
    # Entra's sequence B: GET filter by userName finds the record, so it PATCHes instead of POSTing.
    app = make_app(**scim_settings)
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    (user,) = users(app)
    scim = scim_client(app)
    found = scim.get("/Users", filter='userName eq "ALICE@example.com"').json
    assert found["totalResults"] == 1
    resource = found["Resources"][0]
    assert resource["id"] == user.id and resource["active"] is True
    assert resource["userName"] == "alice@example.com"
    # A POST anyway is a uniqueness conflict, not a second Alice.
    scim.post("/Users", {"userName": "alice@example.com"}, status=409)
    scim.patch_ops(f"/Users/{user.id}", {"op": "replace", "path": "title", "value": "Engineer"})
    assert [u.id for u in users(app)] == [user.id]


# ---------------------------------------------------------------- profile


def test_every_sign_in_updates_the_profile_and_fires_updated(make_app, idp, record_events, events):
    app = record_events(make_app(**{"gateway.plugins": "entra"}))
    claims = idp.claims("alice@example.com", oid=OID)
    sign_in(app, idp, attributes=claims)
    claims[MICROSOFT + "displayname"] = ["Alice Renamed"]
    claims["jobtitle"] = ["Engineer"]
    app.reset()
    sign_in(app, idp, attributes=claims)
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice Renamed" and who["attributes"]["title"] == "Engineer"
    assert ("updated", "alice@example.com", ("display_name", "title"), "") in events
    # The same claims again change nothing: no updated event.
    count = len(events)
    app.reset()
    sign_in(app, idp, attributes=claims)
    assert [e[0] for e in events[count:]] == ["signed_in"]


def test_home_page_shows_the_same_mapped_profile_as_whoami(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra"})
    claims = idp.claims("alice@example.com", oid=OID)
    claims["jobtitle"] = ["Engineer"]
    claims["department"] = ["R&D"]
    sign_in(app, idp, attributes=claims)
    who = app.get("/whoami").json
    page = app.get("/")
    assert who["attributes"]["title"] == "Engineer" and who["attributes"]["department"] == "R&D"
    for label, value in (("Title", "Engineer"), ("Department", "R&amp;D"), ("Email", "alice@example.com")):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page.text


def test_scim_wins_for_scim_users_and_saml_fills_the_gaps(make_app, scim_settings, idp):
    app = make_app(**scim_settings)
    scim_client(app).create_user(
        "alice@example.com", displayName="Alice (SCIM)", **{ENTERPRISE: {"department": "Sales", "costCenter": "4130"}}
    )
    claims = {**idp.claims("alice@example.com", oid=OID), "jobtitle": ["Engineer"], "department": ["Marketing"]}
    sign_in(app, idp, attributes=claims)
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice (SCIM)"  # SCIM is the authority for a SCIM user
    assert who["attributes"]["department"] == "Sales"
    assert who["attributes"]["title"] == "Engineer"  # SCIM sent none: SAML fills it
    assert who["attributes"]["given_name"] == "Alice"
    assert who["attributes"]["costCenter"] == "4130"


def test_authority_saml_makes_the_claims_win(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"attributes.authority": "saml"})
    scim_client(app).create_user("alice@example.com", displayName="Alice (SCIM)", title="Director")
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    who = app.get("/whoami").json
    assert who["displayName"] == "Alice Example"
    assert who["attributes"]["title"] == "Director"  # no title claim: SCIM fills it


def test_transforms_run_in_the_configured_order_at_sign_in(make_app, idp):
    app = make_app(
        **{
            "gateway.plugins": "entra transforms",
            "attributes.transforms": "lowercase_email map_values compose_display_name",
            "map_values.department": "100 = Sales\n200 = Engineering",
        }
    )
    claims = idp.claims("Alice@Example.COM", oid=OID)
    del claims[MICROSOFT + "displayname"]
    claims["department"] = ["200"]
    sign_in(app, idp, "Alice@Example.COM", attributes=claims)
    who = app.get("/whoami").json
    assert who["email"] == "alice@example.com"
    assert who["attributes"]["department"] == "Engineering"
    assert who["displayName"] == "Alice Example"  # composed from the given and family names


# ---------------------------------------------------------------- groups and admins


def test_first_login_mode_takes_memberships_from_the_groups_claim(make_app, idp):
    app = make_app(**{"provisioning.mode": "first_login"})
    a, b, c = (
        "11111111-aaaa-4aaa-8aaa-000000000001",
        "22222222-bbbb-4bbb-8bbb-000000000002",
        "33333333-cccc-4ccc-8ccc-000000000003",
    )
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=(a, b)))
    assert memberships(app, "alice@example.com") == {a, b}
    assert set(app.get("/whoami").json["groups"]) == {a, b}
    sign_in(app, idp, "bob@example.com", attributes=idp.claims("bob@example.com", oid=OTHER_OID, groups=(b,)))
    app.reset()
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=(b, c)))
    assert memberships(app, "alice@example.com") == {b, c}
    assert memberships(app, "bob@example.com") == {b}
    with app.app.registry.dbsession_factory() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Group)) == 3  # b was not created twice


def test_groups_overage_keeps_memberships_and_warns(make_app, idp, caplog):
    app = make_app(**{"provisioning.mode": "first_login"})
    group = "11111111-aaaa-4aaa-8aaa-000000000001"
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=(group,)))
    claims = idp.claims("alice@example.com", oid=OID, groups=())
    del claims["http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"]
    claims[GROUPS_LINK] = [f"https://graph.windows.net/tenant/users/{OID}/getMemberObjects"]
    app.reset()
    with caplog.at_level(logging.WARNING, logger="gateway.provisioning.groups"):
        sign_in(app, idp, attributes=claims)
    assert memberships(app, "alice@example.com") == {group}
    assert any(r.msg == OVERAGE_WARNING for r in caplog.records)
    assert "Groups assigned to the application" in caplog.text


def test_with_scim_on_the_groups_claim_does_not_touch_memberships(make_app, scim_settings, idp):
    app = make_app(**scim_settings)
    scim = scim_client(app)
    user = scim.create_user("alice@example.com")
    scim.create_group("Staff", members=[user["id"]])
    sign_in(
        app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=("99999999-0000-4000-8000-000000000009",))
    )
    assert app.get("/whoami").json["groups"] == ["Staff"]


def test_admin_groups_by_object_id_from_the_claim(make_app, idp):
    admins = "11111111-aaaa-4aaa-8aaa-000000000001"
    app = make_app(**{"provisioning.mode": "first_login", "gateway.admin_groups": admins})
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=(admins,)))
    assert users(app)[0].is_admin
    app.reset()
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID, groups=()))
    assert not users(app)[0].is_admin


def test_every_sign_in_records_when_it_happened(make_app, idp):
    """The first, an unchanged one (a prebuilt UPDATE) and one that changes the profile (the ORM's flush)."""
    app = make_app(**{"provisioning.mode": "first_login"})
    claims = idp.claims("alice@example.com", oid=OID)
    stamps = []
    for display_name in ("Alice Example", "Alice Example", "Alice Other"):
        claims["http://schemas.microsoft.com/identity/claims/displayname"] = [display_name]
        app.reset()
        sign_in(app, idp, attributes=claims)
        (user,) = users(app)
        assert user.display_name == display_name
        stamps.append((user.last_sign_in_at, user.updated_at))
    assert all(signed_in is not None for signed_in, _updated in stamps)
    assert stamps[0][0] < stamps[1][0] < stamps[2][0]
    assert stamps[0][1] < stamps[1][1] < stamps[2][1]


def test_admin_flag_follows_the_settings_when_the_groups_stay_the_same(make_app, idp):
    """A sign-in whose claim changes no membership decides the flag from the groups it read
    (no query): by display name or object id, by admin_users, and back off again."""
    staff = "22222222-bbbb-4bbb-8bbb-000000000002"
    claims = idp.claims("alice@example.com", oid=OID, groups=(staff, "Night Shift"))

    def signed_in_with(**settings):
        app = make_app(**{"provisioning.mode": "first_login", **settings})
        sign_in(app, idp, attributes=claims)
        return users(app)[0].is_admin

    assert not signed_in_with()  # creates alice and her two groups
    assert signed_in_with(**{"gateway.admin_groups": staff})
    assert not signed_in_with()
    assert signed_in_with(**{"gateway.admin_groups": '"night shift"'})
    assert signed_in_with(**{"gateway.admin_users": "ALICE@example.com"})
    assert not signed_in_with(**{"gateway.admin_groups": "someone-else"})
    assert memberships(make_app(), "alice@example.com") == {staff, "Night Shift"}


def test_admin_groups_by_quoted_name_from_scim_groups(make_app, scim_settings, idp):
    app = make_app(**scim_settings, **{"gateway.admin_groups": '"Gateway Admins" other-group'})
    scim = scim_client(app)
    user = scim.create_user("alice@example.com")
    scim.create_group("Gateway Admins", members=[user["id"]])
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    assert users(app)[0].is_admin


@pytest.mark.postgres
def test_two_first_sign_ins_of_one_person_at_once_both_succeed(make_app, idp, postgres_url):
    """The other sign-in creates the user between this one's look-up and its insert: this one
    runs again and signs that user in (it answered 500 before)."""
    from gateway import hookimpl
    from gateway.db.models import new_id

    app = make_app(**{"sqlalchemy.url": postgres_url, "provisioning.mode": "first_login"})

    class CreatedMeanwhile:
        done = False

        @hookimpl(tryfirst=True)
        def gateway_provisioning_decide(self, context, identity, user, source):
            if user is None and not self.done:
                self.done = True
                engine = sa.create_engine(postgres_url)
                with engine.begin() as connection:
                    connection.execute(
                        sa.insert(User).values(
                            id=new_id(),
                            user_name=identity.user_name,
                            user_name_key=identity.user_name.lower(),
                            idp_subject=identity.subject,
                            active=True,
                            attributes={},
                            scim_data={},
                            provisioned_by="saml",
                            is_admin=False,
                        )
                    )
                engine.dispose()
            return None

    racer = CreatedMeanwhile()
    app.app.registry.pm.register(racer)
    sign_in(app, idp, attributes=idp.claims("alice@example.com", oid=OID))
    assert racer.done
    assert [u.user_name for u in users(app)] == ["alice@example.com"]
    assert app.get("/whoami").json["userName"] == "alice@example.com"
