"""Forward-auth (``/auth``) through webtest, with sign-ins from real signed SAML responses."""

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway import ConfigError
from gateway.db.models import Group, GroupMember, SsoSession, User
from saml_support import sign_in

PROXY = {"REMOTE_ADDR": "127.0.0.1"}
STRANGER = {"REMOTE_ADDR": "203.0.113.9"}

RULES = """
    admin.example.com /           "Gateway Admins"
    app.example.com   /reports    Finance
    app.example.com   /           *
"""


def add_to_group(app, user_name, *group_names):
    with app.app.registry.dbsession_factory() as session, session.begin():
        user = session.scalars(sa.select(User).where(User.user_name_key == user_name.lower())).one()
        for name in group_names:
            group = session.scalars(sa.select(Group).where(Group.display_name_key == name.lower())).first()
            if group is None:
                group = Group(display_name=name, display_name_key=name.lower())
                session.add(group)
                session.flush()
            if session.get(GroupMember, (group.id, user.id)) is None:  # sign-in may have added it already
                session.add(GroupMember(group_id=group.id, user_id=user.id))


def set_user(app, user_name, **values):
    with app.app.registry.dbsession_factory() as session, session.begin():
        session.execute(sa.update(User).where(User.user_name_key == user_name.lower()).values(**values))


NGINX = {"forward_auth.proxy": "nginx"}
CADDY = {"forward_auth.proxy": "caddy"}


@pytest.fixture
def fa_app(make_app, database_url):
    return make_app(**{"sqlalchemy.url": database_url, "forward_auth.allowed_hosts": "*.example.com", **NGINX})


def nginx(url):
    return {"X-Original-URL": url}


def test_signed_out_is_401_without_identity(fa_app):
    response = fa_app.get("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=401)
    assert "X-Auth-Request-User" not in response.headers
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_signed_in_gets_identity_headers(fa_app, idp):
    sign_in(fa_app, idp, "alice@example.com")
    add_to_group(fa_app, "alice@example.com", "Staff", "Finance, EMEA")
    response = fa_app.get("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=200)
    headers = response.headers
    assert headers["X-Auth-Request-User"] == "alice@example.com"
    assert headers["X-Auth-Request-Email"] == "alice@example.com"
    assert headers["X-Auth-Request-Name"] == "Alice Example"
    assert len(headers["X-Auth-Request-User-Id"]) == 36
    # Commas inside a group name would split it in the list: they become spaces.
    assert headers["X-Auth-Request-Groups"] == "Finance  EMEA,Staff"


def test_extra_profile_headers_and_custom_header_names(make_app, idp):
    app = make_app(**{"forward_auth.headers": "title department", "forward_auth.header_user": "Remote-User"})
    sign_in(app, idp, "bob@example.com")
    set_user(app, "bob@example.com", title="Engineer", department="R&D – Zürich")
    headers = app.get("/auth", extra_environ=PROXY).headers
    assert headers["Remote-User"] == "bob@example.com"
    assert headers["X-Auth-Request-Title"] == "Engineer"
    # UTF-8 bytes on the wire (WSGI carries them as latin-1 text).
    assert headers["X-Auth-Request-Department"].encode("latin-1").decode("utf-8") == "R&D – Zürich"


def test_rules_first_match_wins_and_default_deny(make_app, idp):
    app = make_app(**{"forward_auth.rules": RULES, **NGINX})
    sign_in(app, idp, "carol@example.com")
    add_to_group(app, "carol@example.com", "Staff")

    def status(url):
        return app.get("/auth", headers=nginx(url), extra_environ=PROXY, expect_errors=True).status_int

    assert status("https://app.example.com/") == 200  # "*": any signed-in person
    assert status("https://app.example.com/reports/q3") == 403  # Finance only
    assert status("https://app.example.com/reportsarchive") == 200  # prefix matches on segments
    assert status("https://admin.example.com/") == 403
    assert status("https://other.example.com/") == 403  # no rule matches: default deny

    add_to_group(app, "carol@example.com", "Finance")
    assert status("https://app.example.com/reports/q3") == 200


def test_rules_match_group_external_ids(make_app, idp):
    app = make_app(**{"forward_auth.rules": "* / 4f1c6a6e-entra-object-id", **NGINX})
    sign_in(app, idp, "erin@example.com")
    add_to_group(app, "erin@example.com", "Ops")
    url = nginx("https://app.example.com/")
    app.get("/auth", headers=url, extra_environ=PROXY, status=403)
    with app.app.registry.dbsession_factory() as session, session.begin():
        session.execute(sa.update(Group).values(external_id="4f1c6a6e-entra-object-id"))
    app.get("/auth", headers=url, extra_environ=PROXY, status=200)


@pytest.mark.parametrize("proxy", ["traefik", "caddy"])
def test_traefik_and_caddy_forwarded_headers(make_app, idp, proxy):
    app = make_app(**{"forward_auth.rules": RULES, "forward_auth.proxy": proxy})
    sign_in(app, idp, "dave@example.com")
    forwarded = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": "/reports/q3?x=1",
    }
    app.get("/auth", headers=forwarded, extra_environ=PROXY, status=403)
    forwarded["X-Forwarded-Uri"] = "/home"
    app.get("/auth", headers=forwarded, extra_environ=PROXY, status=200)


def test_forged_headers_from_an_untrusted_address_are_ignored(make_app, idp):
    # Only app.example.com/public is open to everybody signed in; a browser
    # talking to the gateway directly must not pick that rule by forging headers.
    for proxy, forged in (
        ("nginx", nginx("https://app.example.com/public")),
        ("caddy", {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/public", "X-Forwarded-Proto": "https"}),
    ):
        app = make_app(**{"forward_auth.rules": "app.example.com /public *\n* / Admins", "forward_auth.proxy": proxy})
        sign_in(app, idp, "mallory@example.com")
        app.get("/auth", headers=forged, extra_environ=PROXY, status=200)
        app.get("/auth", headers=forged, extra_environ=STRANGER, status=403)


def test_signed_out_redirect_for_nginx_carries_location(fa_app):
    response = fa_app.get(
        "/auth", {"rd": ""}, headers=nginx("https://app.example.com/page?a=1"), extra_environ=PROXY, status=401
    )
    assert response.headers["Location"] == (
        "http://localhost/saml/login?next=https%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1"
    )


@pytest.mark.parametrize("proxy", ["traefik", "caddy"])
def test_signed_out_redirect_for_traefik_and_caddy_is_a_302(make_app, proxy):
    app = make_app(**{"forward_auth.allowed_hosts": "*.example.com", "forward_auth.proxy": proxy})
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/x"}
    response = app.get("/auth?rd=", headers=forwarded, extra_environ=PROXY, status=302)
    assert response.headers["Location"].endswith("next=https%3A%2F%2Fapp.example.com%2Fx")


@pytest.mark.parametrize(
    "target",
    ["https://evil.example.net/", "https://example.com.evil.net/", "javascript:alert(1)", "//evil.net/"],
)
def test_open_redirect_attempts_get_no_location(fa_app, target):
    response = fa_app.get("/auth", {"rd": target}, extra_environ=PROXY, status=401)
    assert "Location" not in response.headers


def test_explicit_rd_on_an_allowed_host(fa_app):
    response = fa_app.get("/auth", {"rd": "https://wiki.example.com/start"}, extra_environ=PROXY, status=401)
    assert response.headers["Location"].endswith("next=https%3A%2F%2Fwiki.example.com%2Fstart")


def test_deactivation_ends_the_session_at_once(fa_app, idp):
    sign_in(fa_app, idp, "frank@example.com")
    fa_app.get("/auth", extra_environ=PROXY, status=200)
    # Even a deactivation written straight to the table (not through SCIM,
    # which also ends the sessions) is refused on the very next request.
    set_user(fa_app, "frank@example.com", active=False)
    fa_app.get("/auth", extra_environ=PROXY, status=401)


def test_logout_ends_forward_auth_at_once(fa_app, idp):
    sign_in(fa_app, idp, "grace@example.com")
    token = fa_app.cookies["gateway_session"]
    fa_app.get("/auth", extra_environ=PROXY, status=200)
    fa_app.get("/auth", extra_environ=PROXY, status=200)  # served from memory now
    fa_app.get("/").forms[0].submit(status=303)  # the sign-out button, CSRF token included
    fa_app.get("/auth", extra_environ=PROXY, status=401)
    # The old cookie, replayed by a proxy that kept it, is refused too.
    fa_app.get("/auth", headers={"Cookie": f"gateway_session={token}"}, extra_environ=PROXY, status=401)


def test_auth_does_not_write_on_every_request(fa_app, idp):
    sign_in(fa_app, idp, "heidi@example.com")
    engine = fa_app.app.registry.db_engine
    with Session(engine) as session:
        before = session.scalars(sa.select(SsoSession.last_seen_at)).one()
    for _ in range(3):
        fa_app.get("/auth", extra_environ=PROXY, status=200)
    with Session(engine) as session:
        assert session.scalars(sa.select(SsoSession.last_seen_at)).one() == before


def test_cookie_domain_lets_subdomains_share_the_session(make_app, idp):
    app = make_app(**{"session.cookie_domain": ".example.com"})
    response = sign_in(app, idp, "ivan@example.com")
    cookie = [v for k, v in response.headerlist if k == "Set-Cookie" and "gateway_session=" in v][0]
    assert "Domain=example.com" in cookie or "Domain=.example.com" in cookie


@pytest.mark.parametrize(
    "rules",
    ["app.example.com /", "app.example.com reports Finance", 'app.example.com / "Finance', "a*b.example.com / x"],
)
def test_bad_rules_stop_start_up(make_app, rules):
    with pytest.raises(ConfigError) as info:
        make_app(**{"forward_auth.rules": rules, **NGINX})
    assert str(info.value).startswith("forward_auth.rules:")


# ---------------------------------------------------------------- the fast path (gateway.forward_auth.FastPath)


def test_answers_from_memory_match_the_apps_own(fa_app, idp):
    # The first check reads the database through Pyramid and fills the identity
    # cache; the next ones are answered before Pyramid. The two must not differ.
    from gateway.forward_auth import FastPath

    assert isinstance(fa_app.app, FastPath)
    sign_in(fa_app, idp)
    fa_app.app.registry.identity_cache.clear()  # so the first check cannot be answered from memory
    through_pyramid = fa_app.get("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=200)
    from_memory = fa_app.get("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=200)
    assert sorted(from_memory.headerlist) == sorted(through_pyramid.headerlist)  # order carries no meaning
    assert from_memory.headers["X-Auth-Request-Email"] == "alice@example.com"
    head = fa_app.head("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=200)
    assert sorted(head.headerlist) == sorted(through_pyramid.headerlist)


def test_refusals_and_ambiguous_cookies_still_go_through_the_app(make_app, idp):
    app = make_app(**{"forward_auth.rules": RULES, **NGINX})
    sign_in(app, idp)
    app.get("/auth", headers=nginx("https://app.example.com/"), extra_environ=PROXY, status=200)  # now cached
    # A rule refusal of a cached identity is still the app's 403.
    response = app.get("/auth", headers=nginx("https://admin.example.com/"), extra_environ=PROXY, status=403)
    assert response.text == "forbidden\n"
    # A second cookie of the same name is left to WebOb's parsing: the answer
    # is the one Pyramid alone (the app behind the fast path) gives.
    import webtest

    token = app.cookies["gateway_session"]
    pyramid_only = webtest.TestApp(app.app.app, extra_environ=app.extra_environ)
    for cookie in (f"gateway_session=nonsense; gateway_session={token}", f"gateway_session={token}; gateway_session=x"):
        headers = {"Cookie": cookie, **nginx("https://app.example.com/")}
        expected = pyramid_only.get("/auth", headers=headers, extra_environ=PROXY, expect_errors=True)
        answered = app.get("/auth", headers=headers, extra_environ=PROXY, expect_errors=True)
        assert (answered.status_int, sorted(answered.headerlist)) == (expected.status_int, sorted(expected.headerlist))


PLUGINS_THAT_SEE_EVERY_CHECK = {
    "subscriber": (
        "def gateway_pyramid_configure(config):\n"
        "    def mark(event):\n"
        "        event.response.headers['X-Plugin'] = 'seen'\n"
        "    config.add_subscriber(mark, 'pyramid.events.NewResponse')\n",
        200,
    ),
    "tween": (
        "def tween_factory(handler, registry):\n"
        "    def tween(request):\n"
        "        response = handler(request)\n"
        "        response.headers['X-Plugin'] = 'seen'\n"
        "        return response\n"
        "    return tween\n"
        "def gateway_pyramid_configure(config):\n"
        "    config.add_tween(__name__ + '.tween_factory')\n",
        200,
    ),
    "view": (
        "from pyramid.response import Response\n"
        "def gateway_pyramid_configure(config):\n"
        "    config.add_view(lambda request: Response(status=403, headers={'X-Plugin': 'seen'}),\n"
        "                    route_name='forward_auth.check')\n",
        403,
    ),
}


@pytest.mark.parametrize("kind", sorted(PLUGINS_THAT_SEE_EVERY_CHECK))
def test_a_plugin_that_changes_how_auth_is_answered_sees_every_check(make_app, idp, plugin_dir, kind):
    # Its subscriber, tween or replacement view must apply to every /auth,
    # so the fast path (which skips Pyramid) stays out of the way.
    source, status = PLUGINS_THAT_SEE_EVERY_CHECK[kind]
    (plugin_dir / f"gw_every_check_{kind}.py").write_text(source)
    app = make_app(**{"gateway.plugins": f"entra gw_every_check_{kind}"})
    sign_in(app, idp)
    for _ in range(3):
        response = app.get("/auth", extra_environ=PROXY, status=status)
        assert response.headers.get("X-Plugin") == "seen"


def test_a_cookie_inside_a_quoted_value_is_not_a_session(fa_app, idp):
    # WebOb reads pref="...; gateway_session=...; ..." as one quoted value, so
    # the app sees no session; the fast path must not see one either.
    sign_in(fa_app, idp)
    token = fa_app.cookies["gateway_session"]
    fa_app.get("/auth", extra_environ=PROXY, status=200)  # cached now
    fa_app.cookiejar.clear()
    planted = {"Cookie": f'pref="x; gateway_session={token}; y"'}
    fa_app.get("/auth", headers=planted, extra_environ=PROXY, status=401)
