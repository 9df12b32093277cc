"""The shipped example policy plugins: seat_limit, allowed_domains, allowed_groups."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway import ConfigError
from gateway.db.models import User
from gateway_seat_limit import message as seat_message
from saml_support import post_response, sign_in, start_login
from scim_support import ScimClient, make_token

OIDS = {
    "alice@example.com": "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a",
    "bob@example.com": "8b1f2c3d-0000-4000-8000-00000000000b",
    "carol@example.com": "8b1f2c3d-0000-4000-8000-00000000000c",
    "mallory@elsewhere.test": "8b1f2c3d-0000-4000-8000-00000000000d",
}


def sign_in_as(app, idp, name, groups=("Staff",)):
    app.reset()
    return sign_in(app, idp, name, attributes=idp.claims(name, oid=OIDS[name], groups=groups))


def refused(app, idp, name, groups=("Staff",)) -> str:
    app.reset()
    response = post_response(
        app,
        idp.response(start_login(app), name_id=name, attributes=idp.claims(name, oid=OIDS[name], groups=groups)),
        status=403,
    )
    return response.text


def count_users(app) -> int:
    with app.app.registry.dbsession_factory() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(User))


# ---------------------------------------------------------------- seat_limit


def test_seat_limit_refuses_new_users_beyond_the_limit_at_first_sign_in(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra seat_limit", "seat_limit.max_users": "2"})
    sign_in_as(app, idp, "alice@example.com")
    sign_in_as(app, idp, "bob@example.com")
    assert "limited to 2 active users" in refused(app, idp, "carol@example.com")
    assert count_users(app) == 2
    sign_in_as(app, idp, "alice@example.com")  # existing users keep signing in

    # Deactivating someone frees a seat.
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(User).where(User.user_name_key == "bob@example.com").values(active=False))
    sign_in_as(app, idp, "carol@example.com")
    assert count_users(app) == 3


def test_seat_limit_answers_a_scim_create_beyond_the_limit_with_403(make_app, scim_settings):
    app = make_app(**{**scim_settings, "gateway.plugins": "entra sqlstore seat_limit", "seat_limit.max_users": "1"})
    scim = ScimClient(app, make_token(app))
    scim.create_user("alice@example.com")
    error = scim.post("/Users", {"userName": "bob@example.com"}, status=403).json
    assert error["status"] == "403" and error["detail"] == seat_message(1)
    assert count_users(app) == 1


@pytest.mark.parametrize("value", [None, "0", "lots"])
def test_seat_limit_needs_a_positive_whole_number(make_app, value):
    with pytest.raises(ConfigError, match=r"^seat_limit\.max_users: "):
        make_app(**{"gateway.plugins": "entra seat_limit", "seat_limit.max_users": value})


# ---------------------------------------------------------------- allowed_domains


def test_allowed_domains_refuses_other_domains_at_sign_in_and_over_scim(make_app, scim_settings, idp):
    settings = {
        **scim_settings,
        "gateway.plugins": "entra sqlstore allowed_domains",
        "allowed_domains.domains": "Example.com corp.example",
    }
    app = make_app(**settings)
    sign_in_as(app, idp, "alice@example.com")
    text = refused(app, idp, "mallory@elsewhere.test")
    assert "Only people with an email address at corp.example, example.com may use this application." in text
    scim = ScimClient(app, make_token(app))
    error = scim.post("/Users", {"userName": "m@elsewhere.test", "emails": [{"value": "m@elsewhere.test"}]}, status=403)
    assert "corp.example, example.com" in error.json["detail"]
    scim.create_user("bob@corp.example")
    assert count_users(app) == 2


def test_allowed_domains_is_required_and_checked(make_app):
    with pytest.raises(ConfigError, match=r"^allowed_domains\.domains: required"):
        make_app(**{"gateway.plugins": "entra allowed_domains"})
    with pytest.raises(ConfigError, match=r"^allowed_domains\.domains: expected email domains"):
        make_app(**{"gateway.plugins": "entra allowed_domains", "allowed_domains.domains": "localhost"})


# ---------------------------------------------------------------- allowed_groups


def test_allowed_groups_by_claim_and_by_stored_scim_membership(make_app, scim_settings, idp):
    settings = {
        **scim_settings,
        "gateway.plugins": "entra sqlstore allowed_groups",
        "allowed_groups.groups": '"App Users" 5f1c0000-0000-4000-8000-000000000001',
    }
    app = make_app(**settings)
    # By the groups claim (an object id), case of the name irrelevant.
    sign_in_as(app, idp, "alice@example.com", groups=("5f1c0000-0000-4000-8000-000000000001",))
    assert "not in a group that may use this application" in refused(app, idp, "bob@example.com", groups=("Staff",))
    # By a SCIM group membership, even when the claim is missing (overage).
    assert count_users(app) == 1  # refused before anything was created
    scim = ScimClient(app, make_token(app))
    bob_id = scim.create_user("bob@example.com")["id"]  # SCIM creates are not judged by group
    scim.create_group("app users", members=[bob_id])
    sign_in_as(app, idp, "bob@example.com", groups=())
    assert app.get("/whoami").json["groups"] == ["app users"]


def test_allowed_groups_is_required(make_app):
    with pytest.raises(ConfigError, match=r"^allowed_groups\.groups: required"):
        make_app(**{"gateway.plugins": "entra allowed_groups"})
