"""The admin console through its HTTP surface: who may use it, CSRF, headers, its actions, its pages.

A browser drives the same pages in tests/test_admin_browser.py.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
import urllib.parse
import uuid
import zlib

import pytest
import sqlalchemy as sa
import webtest

from conftest import status_from_another_process
from gateway.db.models import AuditEvent, Group, SsoSession, User, utcnow
from gateway.forward_auth import FastPath
from saml_support import post_response, sign_in, start_login
from scim_support import ScimClient, make_token

ADMIN = "admin@example.com"
ADMIN_OID = "11111111-1111-4111-8111-111111111111"
BOB = "bob@example.com"
BOB_OID = "22222222-2222-4222-8222-222222222222"
PAYLOAD = '<script>alert(1)</script>"onmouseover=alert(2) x="'


@pytest.fixture
def console_settings(database_url):
    return {
        "sqlalchemy.url": database_url,
        "gateway.plugins": "entra sqlstore audit",
        "gateway.admin_groups": '"Gateway Admins"',
        "provisioning.mode": "scim first_login",
    }


@pytest.fixture
def console(make_app, console_settings):
    return make_app(**console_settings)


def browser(app) -> webtest.TestApp:
    """Another browser (its own cookies) on the same gateway."""
    return webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "localhost"})


def sign_in_admin(app, idp, name=ADMIN, oid=ADMIN_OID, **kwargs):
    """Sign in, at first sign-in, a member of "Gateway Admins" (their groups come from the claim)."""
    return sign_in(app, idp, name=name, attributes=idp.claims(name, oid=oid, groups=("Gateway Admins",)), **kwargs)


def sign_in_user(app, idp, name=BOB, oid=BOB_OID, groups=("Staff",), **kwargs):
    return sign_in(app, idp, name=name, attributes=idp.claims(name, oid=oid, groups=groups), **kwargs)


def form(page, action_end: str):
    """The form of ``page`` whose action ends with ``action_end``."""
    return next(f for f in page.forms.values() if f.action.endswith(action_end))


def token_of(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def user_id(app, name) -> str:
    with app.app.registry.dbsession_factory() as db:
        return db.scalar(sa.select(User.id).where(User.user_name_key == name.lower()))


def audit_rows(app, action_prefix="admin."):
    with app.app.registry.dbsession_factory() as db:
        return db.execute(
            sa.select(AuditEvent.action, AuditEvent.actor, AuditEvent.target_name, AuditEvent.source)
            .where(AuditEvent.action.like(action_prefix + "%"))
            .order_by(AuditEvent.id)
        ).all()


def age_sessions(app, seconds: int) -> None:
    """Make every session look as if its sign-in was ``seconds`` ago."""
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(SsoSession).values(created_at=utcnow() - dt.timedelta(seconds=seconds)))


@pytest.fixture
def events(console):
    from gateway import hookimpl

    seen = []

    class Recorder:
        @hookimpl
        def gateway_user_event(self, event):
            seen.append((event.type, event.user_name, event.actor, event.source, event.changed))

    console.app.registry.pm.register(Recorder())
    return seen


def console_routes(app):
    """(route name, URL, methods) of every route under /admin, with its placeholders filled."""
    introspector = app.app.registry.introspector
    methods = {}
    for entry in introspector.get_category("views"):
        view = entry["introspectable"]
        if view.get("route_name"):
            found = view.get("request_methods") or ("GET",)
            methods.setdefault(view["route_name"], set()).update((found,) if isinstance(found, str) else found)
    methods = {name: found - {"HEAD"} for name, found in methods.items()}
    fill = {"id": str(uuid.uuid4()), "action": "deactivate", "format": "csv"}
    for entry in introspector.get_category("routes"):
        route = entry["introspectable"]
        if route["pattern"].startswith("/admin"):
            url = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], route["pattern"])
            yield route["name"], url, methods.get(route["name"], set())


# ---------------------------------------------------------------- who may use it


def test_every_console_url_and_post_refuses_a_signed_in_non_admin(console, idp):
    sign_in_user(console, idp)
    token = token_of(console.get("/"))
    checked = 0
    for name, url, methods in console_routes(console):
        if name == "admin.reauth":
            continue  # starting a sign-in: open to anybody, like /saml/login
        for method in methods:
            if method == "GET":
                page = console.get(url, status=403)
                assert "You are not an administrator" in page.text and 'id="switch-user"' in page.text
            else:
                # Even with the session's valid CSRF token.
                console.post(url, {"csrf_token": token, "name": "x", "session": "x"}, status=403)
            checked += 1
    assert checked >= 20


def test_anonymous_visitors_are_sent_through_sign_in_and_back(console, idp):
    for name, url, methods in console_routes(console):
        if name != "admin.reauth" and "GET" in methods:
            location = console.get(url, status=303).headers["Location"]
            assert location.startswith("http://localhost/saml/login?next=")
    location = console.get("/admin/users", params={"q": "al"}, status=303).headers["Location"]
    next_path = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["next"][0]
    assert next_path == "/admin/users?q=al"
    back = sign_in_admin(console, idp, next_path=next_path)
    assert back.headers["Location"] == "http://localhost/admin/users?q=al"
    assert console.get("/admin/users", params={"q": "al"}).status_int == 200


def test_the_403_page_says_why_and_offers_another_account(console, idp):
    sign_in_user(console, idp)
    page = console.get("/admin/users", status=403)
    assert "signed in as <strong>bob@example.com</strong>" in page.text
    switch = page.html.find(id="switch-user")["href"]
    assert switch.startswith("http://localhost/admin/reauth?next=")
    to_idp = console.get(switch.replace("http://localhost", ""), status=303).headers["Location"]
    assert 'ForceAuthn="true"' in authn_request_xml(to_idp)
    page.forms[1].submit(status=303)  # the page's "Sign out" (forms[0] is the header's)
    assert console.get("/whoami", status=401)


def authn_request_xml(location: str) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    return zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()


def test_gateway_admin_users_makes_the_first_admin(make_app, console_settings, idp):
    app = make_app(**{**console_settings, "gateway.admin_groups": None, "gateway.admin_users": "Bob@Example.com"})
    sign_in_user(app, idp)
    assert app.get("/admin").status_int == 200
    dashboard = app.get("/admin").text
    assert "No admin group is configured" in dashboard


def test_a_cli_grant_survives_the_group_sync_and_can_be_revoked(
    make_app, console_settings, idp, tmp_path, idp_metadata_file
):
    from gateway.cli import main

    app = make_app(**console_settings)
    sign_in_user(app, idp)  # Bob: Staff only
    app.get("/admin", status=403)
    ini = write_cli_ini(tmp_path, console_settings, idp_metadata_file)
    assert main([ini, "users", "grant-admin", "BOB@example.com"]) == 0
    # The live session, at once (PostgreSQL: as soon as the change notification arrives).
    status_from_another_process(app, "/admin", 200)
    app.reset()
    sign_in_user(app, idp)  # the sign-in recomputes the flag from the groups: the grant stays
    assert app.get("/admin").status_int == 200
    assert main([ini, "users", "grant-admin", "bob@example.com"]) == 1  # already granted
    assert main([ini, "users", "revoke-admin", "bob@example.com"]) == 0
    status_from_another_process(app, "/admin", 403)
    assert [(r.action, r.actor, r.source) for r in audit_rows(app)] == [
        ("admin.user.grant_admin", "cli", "cli"),
        ("admin.user.revoke_admin", "cli", "cli"),
    ]
    assert main([ini, "users", "grant-admin", "nobody@example.com"]) == 1


def write_cli_ini(tmp_path, settings, idp_metadata_file):
    ini = tmp_path / "gw.ini"
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\ngateway.base_url = http://localhost\n"
        f"sqlalchemy.url = {settings['sqlalchemy.url'].replace('%', '%%')}\n"
        'gateway.plugins = entra sqlstore audit\ngateway.admin_groups = "Gateway Admins"\n'
        f"saml.idp_metadata = {idp_metadata_file}\n"
        "session.secret = test-secret-test-secret-test-secret-0123456789\nsession.cookie_secure = false\n"
    )
    return str(ini)


def test_the_cli_signs_out_deactivates_and_reactivates(
    console, console_settings, idp, tmp_path, idp_metadata_file, capsys
):
    from gateway.cli import main

    ini = write_cli_ini(tmp_path, console_settings, idp_metadata_file)
    sign_in_user(console, idp)
    assert main([ini, "users", "sign-out", BOB]) == 0
    assert "Ended 1 session(s) of bob@example.com." in capsys.readouterr().out
    status_from_another_process(console, "/whoami", 401)
    sign_in_user(console, idp)
    assert main([ini, "users", "deactivate", BOB]) == 0
    status_from_another_process(console, "/whoami", 401)
    assert main([ini, "users", "deactivate", BOB]) == 1
    assert "already inactive" in capsys.readouterr().err
    assert main([ini, "users", "reactivate", BOB]) == 0
    sign_in_user(console, idp)
    ScimClient(console, make_token(console)).create_user("carol@example.com")
    assert main([ini, "users", "deactivate", "carol@example.com"]) == 1
    assert "Entra is the source of truth" in capsys.readouterr().err
    assert [(r.action, r.actor, r.source) for r in audit_rows(console)] == [
        ("admin.user.sign_out_everywhere", "cli", "cli"),
        ("admin.user.deactivate", "cli", "cli"),
        ("admin.user.reactivate", "cli", "cli"),
    ]


def test_grants_and_admin_users_survive_writes_to_the_admin_group(make_app, console_settings, idp):
    app = make_app(**{**console_settings, "gateway.admin_users": "carol@example.com"})
    scim = ScimClient(app, make_token(app))
    ids = {name: scim.create_user(f"{name}@example.com")["id"] for name in ("alice", "bob", "carol")}
    admins = scim.create_group("Gateway Admins", members=[ids["alice"]])
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.get(User, ids["bob"]).admin_granted_by = "cli"
    flags = lambda: {n: db_user(app, i).is_admin for n, i in ids.items()}  # noqa: E731
    # gateway.admin_users counts from the person's sign-in (the console needs one anyway).
    sign_in_user(browser(app), idp, name="carol@example.com", oid="55555555-5555-4555-8555-555555555555")
    scim.patch_ops(
        f"/Groups/{admins['id']}", {"op": "add", "path": "members", "value": [{"value": ids["bob"]}]}, status=204
    )
    assert flags() == {"alice": True, "bob": True, "carol": True}
    scim.patch_ops(f"/Groups/{admins['id']}", {"op": "remove", "path": f'members[value eq "{ids["bob"]}"]'}, status=204)
    scim.patch_ops(
        f"/Groups/{admins['id']}", {"op": "remove", "path": f'members[value eq "{ids["alice"]}"]'}, status=204
    )
    assert flags() == {"alice": False, "bob": True, "carol": True}
    scim.delete(f"/Groups/{admins['id']}")
    assert flags() == {"alice": False, "bob": True, "carol": True}


def db_user(app, id_) -> User:
    with app.app.registry.dbsession_factory() as db:
        return db.get(User, id_)


# ---------------------------------------------------------------- CSRF and headers


def test_a_console_post_without_the_session_token_is_refused(console, idp):
    sign_in_admin(console, idp)
    token = token_of(console.get("/admin/tokens"))
    for _name, url, methods in console_routes(console):
        if "POST" in methods:
            for fields in (
                {"name": "sneaky"},
                {"name": "sneaky", "csrf_token": "wrong-" + token},
                {"csrf_token": "é" * 5},
            ):
                page = console.post(url, fields, status=403)
                assert "This form expired" in page.text
    assert console.get("/admin/tokens").html.find(id="no-tokens") is not None
    # The same form with the token goes through.
    assert "sneaky" in console.post("/admin/tokens/create", {"name": "sneaky", "csrf_token": token}).text


def test_every_console_page_has_the_security_headers_and_forward_auth_keeps_its_fast_path(console, idp):
    assert isinstance(console.app, FastPath)
    sign_in_admin(console, idp)
    me = user_id(console, ADMIN)
    with console.app.registry.dbsession_factory() as db:
        group = db.scalar(sa.select(Group.id))
    pages = [url for name, url, methods in console_routes(console) if "GET" in methods and name != "admin.reauth"]
    pages = [u for u in pages if re.fullmatch(r"[a-z/]+", u)] + [f"/admin/users/{me}", f"/admin/groups/{group}"]
    assert len(pages) >= 12
    for url in pages:
        headers = console.get(url).headers
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"], url
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        body = console.get(url).text
        assert "<script>" not in body and " style=" not in body and " on" + "click=" not in body, url
    for status_page in (browser(console),):
        sign_in_user(status_page, idp)
        assert status_page.get("/admin", status=403).headers["X-Frame-Options"] == "DENY"
    cookie = next(c for c in console.cookiejar if c.name == "gateway_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Lax"


# ---------------------------------------------------------------- actions


def test_ending_a_session_signs_that_browser_out_at_once(console, idp, events):
    sign_in_admin(console, idp)
    other = browser(console)
    sign_in_user(other, idp)
    assert other.get("/whoami").json["userName"] == BOB
    assert other.get("/auth", status=200)  # in forward-auth's memory now
    bob = user_id(console, BOB)
    page = console.get(f"/admin/users/{bob}")
    end = form(page, "/admin/sessions/end")
    done = end.submit(status=303)
    assert done.headers["Location"] == f"http://localhost/admin/users/{bob}?done=session-ended"
    assert "The session was ended" in done.follow().text
    other.get("/whoami", status=401)
    other.get("/auth", status=401)
    assert ("signed_out", BOB, f"admin:{ADMIN}", "admin", ()) in events
    assert [(r.action, r.actor, r.target_name) for r in audit_rows(console)] == [
        ("admin.session.end", f"admin:{ADMIN}", BOB)
    ]
    # Ending it twice says so.
    refused = end.submit(status=409)
    assert "already ended" in refused.text


def test_sign_out_everywhere_deactivate_and_reactivate_a_first_login_user(console, idp, events):
    sign_in_admin(console, idp)
    phone, laptop = browser(console), browser(console)
    sign_in_user(phone, idp)
    sign_in_user(laptop, idp)
    bob = user_id(console, BOB)
    page = console.get(f"/admin/users/{bob}")
    assert len(page.html.select("#sessions tbody tr")) == 2
    form(page, "/sign-out-everywhere").submit(status=303)
    phone.get("/whoami", status=401)
    laptop.get("/whoami", status=401)

    sign_in_user(phone, idp)
    page = console.get(f"/admin/users/{bob}")
    assert page.html.find(id="source-of-truth") is None
    form(page, "/deactivate").submit(status=303)
    phone.get("/whoami", status=401)
    refused = post_response(
        phone, idp.response(start_login(phone), name_id=BOB, attributes=idp.claims(BOB, oid=BOB_OID)), status=403
    )
    assert "deactivated" in refused.text
    page = console.get(f"/admin/users/{bob}")
    assert page.html.find(id="user-state").text == "inactive"
    form(page, "/reactivate").submit(status=303)
    sign_in_user(phone, idp)
    assert phone.get("/whoami").json["userName"] == BOB
    actor = f"admin:{ADMIN}"
    assert [(r.action, r.actor) for r in audit_rows(console)] == [
        ("admin.user.sign_out_everywhere", actor),
        ("admin.user.deactivate", actor),
        ("admin.user.reactivate", actor),
    ]
    assert [e[0] for e in events if e[2] == actor] == ["signed_out", "deactivated", "reactivated"]
    with console.app.registry.dbsession_factory() as db:
        user = db.get(User, bob)
        assert user.active and user.scim_data["active"] is True and user.version >= 3


def test_a_reactivation_asks_the_provisioning_policy(make_app, console_settings, idp, events):
    """A seat limit holds whoever reactivates: the console and the CLI are refused as Entra is."""
    console = make_app(
        **{**console_settings, "gateway.plugins": "entra sqlstore audit seat_limit", "seat_limit.max_users": "2"}
    )
    sign_in_admin(console, idp)
    sign_in_user(browser(console), idp)
    bob = user_id(console, BOB)
    form(console.get(f"/admin/users/{bob}"), "/deactivate").submit(status=303)
    sign_in_user(browser(console), idp, name="carol@example.com", oid="33333333-3333-4333-8333-333333333333")
    page = console.get(f"/admin/users/{bob}")
    refused = form(page, "/reactivate").submit(status=409)
    assert "bob@example.com stays inactive" in refused.text and "limited to 2 active users" in refused.text
    assert console.get(f"/admin/users/{bob}").html.find(id="user-state").text == "inactive"
    assert "reactivated" not in [e[0] for e in events]
    assert "admin.user.reactivate" not in [r.action for r in audit_rows(console)]
    # A seat freed, the same reactivation goes through.
    carol = user_id(console, "carol@example.com")
    form(console.get(f"/admin/users/{carol}"), "/deactivate").submit(status=303)
    form(console.get(f"/admin/users/{bob}"), "/reactivate").submit(status=303)
    assert console.get(f"/admin/users/{bob}").html.find(id="user-state").text == "active"


def test_an_admin_cannot_deactivate_themselves(console, idp):
    sign_in_admin(console, idp)
    me = user_id(console, ADMIN)
    page = console.get(f"/admin/users/{me}")
    assert page.html.find(id="deactivate") is None
    refused = console.post(f"/admin/users/{me}/deactivate", {"csrf_token": token_of(page)}, status=409)
    assert "cannot deactivate yourself" in refused.text
    assert console.get("/admin").status_int == 200


def test_a_scim_user_is_deactivated_in_entra_not_here(console, idp):
    scim = ScimClient(console, make_token(console))
    carol = scim.create_user("carol@example.com", displayName="Carol")
    sign_in_admin(console, idp)
    page = console.get(f"/admin/users/{carol['id']}")
    assert "Entra is the source of truth" in page.html.find(id="source-of-truth").text
    assert page.html.find(id="deactivate") is None
    # A forged POST is refused the same way, and changes nothing.
    refused = console.post(f"/admin/users/{carol['id']}/deactivate", {"csrf_token": token_of(page)}, status=409)
    assert "Entra is the source of truth" in refused.text
    with console.app.registry.dbsession_factory() as db:
        assert db.get(User, carol["id"]).active is True


def test_make_admin_from_the_console(console, idp, events):
    sign_in_admin(console, idp)
    other = browser(console)
    sign_in_user(other, idp)
    other.get("/admin", status=403)
    bob = user_id(console, BOB)
    page = console.get(f"/admin/users/{bob}")
    form(page, "/grant-admin").submit(status=303)
    assert other.get("/admin").status_int == 200
    page = console.get(f"/admin/users/{bob}")
    assert f"granted by admin:{ADMIN}" in page.html.find(id="admin-reasons").text
    form(page, "/revoke-admin").submit(status=303)
    other.get("/admin", status=403)
    assert [e[4] for e in events if e[0] == "updated" and e[2] == f"admin:{ADMIN}"] == [("is_admin",), ("is_admin",)]


def test_sensitive_actions_need_a_recent_sign_in(console, idp):
    sign_in_admin(console, idp)
    create = form(console.get("/admin/tokens"), "/admin/tokens/create")
    age_sessions(console, 901)  # admin.reauth_seconds defaults to 900
    create["name"] = "entra"
    again = create.submit(status=303)
    assert again.headers["Location"] == "http://localhost/admin/reauth?next=%2Fadmin%2Ftokens"
    to_idp = console.get(again.headers["Location"].replace("http://localhost", ""), status=303)
    xml = authn_request_xml(to_idp.headers["Location"])
    assert 'ForceAuthn="true"' in xml
    assert console.get("/admin/tokens").html.find(id="no-tokens") is not None  # nothing was created
    request_id = re.search(r' ID="([^"]+)"', xml).group(1)
    back = post_response(
        console,
        idp.response(
            request_id, name_id=ADMIN, attributes=idp.claims(ADMIN, oid=ADMIN_OID, groups=("Gateway Admins",))
        ),
        status=303,
    )
    assert back.headers["Location"] == "http://localhost/admin/tokens"
    create = form(console.get("/admin/tokens"), "/admin/tokens/create")
    create["name"] = "entra"
    assert 'id="new-token"' in create.submit().text
    # Not sensitive: reading pages with an older sign-in.
    age_sessions(console, 5000)
    assert console.get("/admin/users").status_int == 200


def test_the_reauth_page_returns_only_to_console_pages(console, idp):
    for target in ("https://evil.example/admin", "//evil.example/admin", "/whoami", "/adminx"):
        to_idp = console.get("/admin/reauth", params={"next": target}, status=303).headers["Location"]
        request_id = re.search(r' ID="([^"]+)"', authn_request_xml(to_idp)).group(1)
        back = post_response(
            console, idp.response(request_id, name_id=ADMIN, attributes=idp.claims(ADMIN, oid=ADMIN_OID)), status=303
        )
        assert back.headers["Location"] == "http://localhost/admin", target
        console.reset()


def test_create_a_token_use_it_and_revoke_it(console, idp):
    sign_in_admin(console, idp)
    create = form(console.get("/admin/tokens"), "/admin/tokens/create")
    create["name"] = "entra-2026"
    created = create.submit()
    secret = created.html.find(id="new-token").text
    assert secret.startswith("gws_") and created.headers["Cache-Control"] == "no-store"
    assert created.html.find(attrs={"data-copy": "new-token"}) is not None
    listing = console.get("/admin/tokens")
    assert secret not in listing.text and "entra-2026" in listing.text
    scim = ScimClient(console, secret)
    scim.get("/Users")
    form(console.get("/admin/tokens"), "/admin/tokens/revoke").submit(status=303)
    scim.get("/Users", status=401)
    assert "revoked" in console.get("/admin/tokens").html.find(id="token-entra-2026").text
    assert [(r.action, r.actor, r.target_name) for r in audit_rows(console, "scim.token.")] == [
        ("scim.token.create", f"admin:{ADMIN}", "entra-2026"),
        ("scim.token.revoke", f"admin:{ADMIN}", "entra-2026"),
    ]
    create = form(console.get("/admin/tokens"), "/admin/tokens/create")
    create["name"] = "entra-2026"  # names stay taken
    assert "exists already" in create.submit(status=400).html.find(id="token-error").text


# ---------------------------------------------------------------- pages


def test_attacker_controlled_text_is_inert_on_every_page(console, idp):
    scim = ScimClient(console, make_token(console))
    mallory = scim.create_user("mallory@example.com", displayName=PAYLOAD, title=PAYLOAD, externalId="m-1")
    group = scim.create_group(PAYLOAD, members=[mallory["id"]])
    sign_in_admin(console, idp)
    # A claim, and a browser name, from a person who signs in.
    eve = browser(console)
    claims = idp.claims("eve@example.com", oid="33333333-3333-4333-8333-333333333333", groups=(PAYLOAD,))
    claims["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"] = [PAYLOAD]
    eve.extra_environ["HTTP_USER_AGENT"] = PAYLOAD
    sign_in(eve, idp, name="eve@example.com", attributes=claims)
    eve_id = user_id(console, "eve@example.com")
    with console.app.registry.dbsession_factory() as db:
        claim_group = db.scalar(sa.select(Group.id).where(Group.id != group["id"], Group.display_name == PAYLOAD))
    pages = [
        "/admin",
        "/admin/users",
        "/admin/users?q=mallory",
        f"/admin/users/{mallory['id']}",
        f"/admin/users/{eve_id}",
        "/admin/groups",
        f"/admin/groups/{group['id']}",
        "/admin/sessions",
        "/admin/audit",
        f"/admin/audit?user={urllib.parse.quote(PAYLOAD)}",
    ]
    assert claim_group is None  # the claim's group matched the SCIM group by name
    for url in pages:
        page = console.get(url)
        assert "<script>alert" not in page.text, url
        assert '"onmouseover=' not in page.text, url
    user_page = console.get(f"/admin/users/{eve_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;onmouseover=alert(2)" in user_page.text
    assert json.loads(user_page.html.find(id="saml-claims").text)["given_name"] == PAYLOAD  # shown as text
    assert "&lt;script&gt;" in console.get("/admin/sessions").text  # the browser name, as text
    assert PAYLOAD in console.get(f"/admin/groups/{group['id']}").html.find("h1").text


def search(app, **params):
    page = app.get("/admin/users", params=params)
    return [a.text for a in page.html.select("#users tbody td:first-child a")], page


def test_user_search_by_prefix_and_exact_ids_filters_and_pages(console, idp):
    scim = ScimClient(console, make_token(console))
    made = {}
    for i in range(60):
        name = f"user{i:02d}@example.com"
        made[name] = scim.create_user(
            name,
            displayName=f"Person {i:02d}",
            externalId=f"ext-{i:02d}",
            active=i % 10 != 0,
            emails=[{"value": f"mail{i:02d}@corp.example", "primary": True}],
        )
    scim.create_user(
        "zed@example.com", displayName="Marie Curie", emails=[{"value": "radium@corp.example", "primary": True}]
    )
    sign_in_admin(console, idp)

    names, page = search(console)
    assert len(names) == 50 and names[0] == ADMIN and names[1:3] == ["user00@example.com", "user01@example.com"]
    next_url = page.html.find(id="next-page")["href"]
    second = console.get(next_url)
    rest = [a.text for a in second.html.select("#users tbody td:first-child a")]
    assert (
        rest[0] == "user49@example.com" and rest[-1] == "zed@example.com" and second.html.find(id="next-page") is None
    )
    assert len(set(names) | set(rest)) == 62

    assert search(console, q="USER5")[0] == [f"user5{i}@example.com" for i in range(10)]
    assert search(console, q="radium")[0] == ["zed@example.com"]  # email, from three characters
    assert search(console, q="marie c")[0] == ["zed@example.com"]  # display name
    assert search(console, q="ma")[0] == []  # two letters: the userName only
    assert search(console, q="ext-07")[0] == ["user07@example.com"]  # external id, exactly
    assert search(console, q="ext-0")[0] == []
    assert search(console, q=made["user33@example.com"]["id"])[0] == ["user33@example.com"]
    sign_in_user(browser(console), idp, name="subject@example.com", oid="44444444-4444-4444-8444-444444444444")
    assert search(console, q="44444444-4444-4444-8444-444444444444")[0] == ["subject@example.com"]  # IdP subject
    assert search(console, q="user", state="inactive")[0] == [f"user{i}0@example.com" for i in range(6)]
    assert search(console, source="saml")[0] == [ADMIN, "subject@example.com"]
    assert search(console, q="%")[0] == [] and search(console, q="_")[0] == []
    assert console.get("/admin/users", params={"q": "nobody"}).html.find(id="no-users") is not None


def test_user_page_shows_profile_claims_scim_resource_groups_and_history(console, idp):
    sign_in_admin(console, idp)
    me = user_id(console, ADMIN)
    page = console.get(f"/admin/users/{me}")
    assert page.html.find("h1").text == "Admin Example"
    assert "Gateway Admins" in page.html.find(id="groups").text
    assert json.loads(page.html.find(id="scim-resource").text)["userName"] == ADMIN
    assert json.loads(page.html.find(id="saml-claims").text)["given_name"] == "Admin"
    assert "user.signed_in" in page.html.find(id="audit").text
    assert 'member of the admin group "Gateway Admins"' in page.html.find(id="admin-reasons").text
    assert page.html.find(id="user-id").text == me and page.html.find(attrs={"data-copy": "user-id"})
    missing = console.get(f"/admin/users/{uuid.uuid4()}", status=404)
    assert missing.html.find(id="not-found") and missing.headers["Content-Security-Policy"]
    console.post(f"/admin/users/{me}/explode", {"csrf_token": token_of(page)}, status=404)


def test_groups_and_members_are_paged(console, idp):
    scim = ScimClient(console, make_token(console))
    ids = [scim.create_user(f"m{i:02d}@example.com")["id"] for i in range(55)]
    big = scim.create_group("Engineering", members=ids)
    for i in range(52):
        scim.create_group(f"Team {i:02d}")
    sign_in_admin(console, idp)
    groups = console.get("/admin/groups")
    rows = groups.html.select("#groups tbody tr")
    assert len(rows) == 50 and "admin group" in rows[1].text and "Engineering" in rows[0].text
    assert rows[0].select("td")[2].text == "55"
    assert "Team 49" in console.get(groups.html.find("a", rel="next")["href"]).text
    assert [r.text for r in console.get("/admin/groups", params={"q": "team 5"}).html.select("#groups tbody a")] == [
        "Team 50",
        "Team 51",
    ]
    group = console.get(f"/admin/groups/{big['id']}")
    assert group.html.find(id="member-count").text == "55" and len(group.html.select("#members tbody tr")) == 50
    second = console.get(group.html.find("a", rel="next")["href"])
    assert [a.text for a in second.html.select("#members tbody a")] == [f"m{i}@example.com" for i in range(50, 55)]


def test_sessions_page_filters_by_user(console, idp):
    sign_in_admin(console, idp)
    sign_in_user(browser(console), idp)
    everyone = console.get("/admin/sessions")
    assert len(everyone.html.select("#sessions tbody tr")) == 2
    bobs = console.get("/admin/sessions", params={"user": "BOB@example.com"})
    assert [a.text for a in bobs.html.select("#sessions tbody td:first-child a")] == [BOB]
    assert "this browser" in console.get("/admin/sessions", params={"user": ADMIN}).text


def test_audit_filters_and_exports(console, idp):
    sign_in_admin(console, idp)
    bob_browser = browser(console)
    sign_in_user(bob_browser, idp)
    create = form(console.get("/admin/tokens"), "/admin/tokens/create")
    create["name"] = "=cmd|calc"
    create.submit(status=400)  # a bad name: nothing recorded
    create["name"] = "entra"
    create.submit()

    def rows(**f):
        return [tr.select("td")[1].text for tr in console.get("/admin/audit", params=f).html.select("#audit tbody tr")]

    assert rows(event="scim.token") == ["scim.token.create"]
    assert set(rows(actor="user:bob")) == {"user.created", "user.signed_in"}
    assert set(rows(user=BOB)) == {"user.created", "user.signed_in"}
    assert rows(user="nobody@example.com") == []
    cid = console.get("/admin/audit", params={"event": "scim.token"}).html.select("#audit tbody tr td")[6].text
    assert rows(correlation_id=cid) == ["scim.token.create"]
    tomorrow = (utcnow() + dt.timedelta(days=1)).date().isoformat()
    assert rows(since=tomorrow) == [] and len(rows(until=tomorrow)) >= 5
    bad = console.get("/admin/audit", params={"since": "yesterday"}, status=400)
    assert "Expected a date" in bad.html.find(id="filter-error").text and bad.headers["X-Frame-Options"] == "DENY"
    console.get("/admin/audit/export.csv", params={"until": "soon"}, status=400)

    exported = console.get("/admin/audit/export.csv", params={"actor": "user:"})
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert exported.headers["Content-Disposition"].startswith('attachment; filename="gateway-audit-')
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["action"] for r in table} == {"user.created", "user.signed_in"} and len(table) == 4
    lines = console.get("/admin/audit/export.jsonl", params={"event": "scim."}).text.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["scim.token.create"]
    console.get("/admin/audit/export.xml", status=404)


def test_csv_export_cells_are_never_spreadsheet_formulas():
    from gateway.admin.views.audit import _csv_line

    row = {
        "id": 1,
        "at": "t",
        "actor": "=HYPERLINK(1)",
        "action": "+x",
        "target_type": "user",
        "target_id": None,
        "target_name": "@SUM(1)",
        "source": "-1",
        "correlation_id": "ok",
        "details": {},
    }
    cells = next(csv.reader(io.StringIO(_csv_line(row).decode())))
    assert cells[2:5] == ["'=HYPERLINK(1)", "'+x", "user"] and cells[6] == "'@SUM(1)" and cells[7] == "'-1"


def test_idp_page_shows_certificates_refreshes_and_the_values_for_entra(make_app, console_settings, idp, tmp_path):
    from saml_support import make_keypair

    soon = make_keypair(tmp_path, "soon", days=12)
    path = tmp_path / "idp.xml"
    path.write_bytes(idp.metadata(certs=[idp.keys, soon]))
    app = make_app(**{**console_settings, "saml.idp_metadata": str(path)})
    sign_in_admin(app, idp)
    page = app.get("/admin/idp")
    assert page.html.find(id="metadata-source").text == str(path)
    days = [tr.select("td")[3].text.strip() for tr in page.html.select("#certificates tbody tr")]
    assert days[0] in ("11", "12") and int(days[1]) > 1000
    assert "warn" in page.html.select("#certificates tbody tr")[0].select(".badge")[0]["class"]
    values = {dd.code["id"]: dd.code.text for dd in page.html.find(id="entra-values").select("dd")}
    assert values == {
        "identifier": "http://localhost/saml/metadata",
        "reply-url": "http://localhost/saml/acs",
        "sign-on-url": "http://localhost/saml/login",
        "logout-url": "http://localhost/saml/slo",
        "scim-tenant-url": "http://localhost/scim/v2",
        "sp-metadata-url": "http://localhost/saml/metadata",
    }
    assert len(page.html.select("#entra-values button.copy")) == 6
    assert "expires in 1" in app.get("/admin").html.find(id="problems").text

    path.write_text("<not metadata")
    refreshed = form(page, "/admin/idp/refresh").submit(status=303)
    assert refreshed.headers["Location"].endswith("/admin/idp?done=idp-refresh-failed")
    page = refreshed.follow()
    assert "not usable XML" in page.html.find(id="last-error").text
    assert "The last IdP metadata refresh failed" in app.get("/admin").html.find(id="problems").text
    path.write_bytes(idp.metadata())
    form(page, "/admin/idp/refresh").submit(status=303)
    assert "none" == app.get("/admin/idp").html.find(id="last-error").text
    assert [(r.action, r.actor) for r in audit_rows(app)] == [("admin.idp.refresh", f"admin:{ADMIN}")] * 2


def test_dashboard_counts_and_what_is_wrong(console, idp):
    scim = ScimClient(console, make_token(console, "old-token"))
    scim.create_user("gone@example.com", active=False)
    sign_in_admin(console, idp)
    refused = browser(console)
    post_response(
        refused,
        idp.response(start_login(refused), name_id="gone@example.com", attributes=idp.claims("gone@example.com")),
        status=403,
    )
    with console.app.registry.dbsession_factory() as db, db.begin():
        from gateway.db.models import ScimToken

        db.execute(
            sa.update(ScimToken).values(
                created_at=utcnow() - dt.timedelta(days=120), last_used_at=utcnow() - dt.timedelta(days=91)
            )
        )
    page = console.get("/admin")
    assert page.html.find(id="count-users").text == "2"
    assert "1 active, 1 inactive" in page.text and "1 from first sign-in, 1 from SCIM" in page.text
    assert page.html.find(id="count-sessions").text == "1"
    assert page.html.find(id="count-signins").text == "1"
    assert int(page.html.find(id="count-refusals").text) >= 1
    assert "deactivated" in page.html.find(id="refusals").text
    assert 'SCIM token "old-token" is last used' in page.html.find(id="problems").text
    assert "No admin group" not in page.text


def test_development_idp_alice_is_an_admin(make_app):
    """development.ini: scim first_login, "Gateway Admins"; Alice from the development IdP's pick page."""
    app = make_app(
        **{
            "gateway.plugins": "entra devidp sqlstore audit",
            "saml.idp_profile": "devidp",
            "saml.idp_metadata": None,
            "gateway.admin_groups": '"Gateway Admins"',
            "provisioning.mode": "scim first_login",
        }
    )
    app.extra_environ["REMOTE_ADDR"] = "127.0.0.1"  # the development IdP answers only this machine
    to_idp = app.get("/admin", status=303).headers["Location"]
    to_devidp = app.get(to_idp.replace("http://localhost", ""), status=303).headers["Location"]
    pick = app.get(to_devidp.replace("http://localhost", ""))
    form = next(f for f in pick.forms.values() if f.fields.get("email", [None])[0].value == "alice@example.com")
    back = form.submit().forms["post"].submit(status=303)
    assert back.headers["Location"] == "http://localhost/admin"
    assert app.get("/whoami").json["groups"] == ["Gateway Admins", "Staff"]
    assert app.get("/admin").status_int == 200
    groups = app.get("/admin/groups").html.select("#groups tbody tr")
    assert "admin group" in groups[0].text and "Gateway Admins" in groups[0].text
