"""The signed-out round trip, in-process: /auth sends the browser to sign in, and sign-in brings it back to that page.

Each test follows the redirects as a browser would: the 401's (nginx) or
302's (Traefik, Caddy) ``Location`` to ``/saml/login``, the AuthnRequest to
the IdP, the signed response to ``/saml/acs``, and its 303 back to the app,
where ``/auth`` now answers 200. Only pages on the gateway's own host and on
``forward_auth.allowed_hosts`` are ever returned to.
"""

import urllib.parse

import pytest

from gateway.forward_auth.urls import MAX_URL
from saml_support import authn_request_id, post_response, refused
from test_forward_auth import PROXY, set_user
from test_forward_auth_bypass import original

ALLOWED = {"forward_auth.allowed_hosts": "*.example.com partner.example.net"}


def app_for(make_app, proxy="nginx", **settings):
    return make_app(**{**ALLOWED, "forward_auth.proxy": proxy, **settings})


def signin_location(app, proxy: str, url: str) -> str:
    """The sign-in URL that /auth gives a signed-out browser asking for ``url``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    response = app.get(
        "/auth",
        {"rd": ""},
        headers=original(proxy, parts.netloc, path, parts.scheme),
        extra_environ=PROXY,
        status=401 if proxy == "nginx" else 302,
    )
    assert response.headers["Cache-Control"] == "no-store"
    return response.headers["Location"]


def complete_signin(app, idp, signin_url: str, name="alice@example.com"):
    """Follow the sign-in URL through the IdP; return the ACS's 303."""
    assert signin_url.startswith("http://localhost/saml/login?next=")
    started = app.get(signin_url[len("http://localhost") :], status=303)
    return post_response(app, idp.response(authn_request_id(started.headers["Location"]), name_id=name), status=303)


@pytest.mark.parametrize("proxy", ["nginx", "traefik", "caddy"])
@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/deep/page?x=1",
        "http://app.example.com:8080/deep/page?x=1&y=%C3%A9&z=a%2Fb",
        "https://wiki.example.com./start",
        "https://a.b.example.com/",
        "https://partner.example.net:8443/x;jsessionid=1?q=%20",
        "http://localhost/admin?tab=users",
        "http://localhost:8443/elsewhere",
    ],
)
def test_a_signed_out_visit_lands_back_on_the_same_page(make_app, idp, proxy, url):
    app = app_for(make_app, proxy)
    location = signin_location(app, proxy, url)
    assert location == "http://localhost/saml/login?next=" + urllib.parse.quote(url, safe="")
    back = complete_signin(app, idp, location)
    assert back.headers["Location"] == url
    parts = urllib.parse.urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    headers = app.get(
        "/auth", headers=original(proxy, parts.netloc, path, parts.scheme), extra_environ=PROXY, status=200
    ).headers
    assert headers["X-Auth-Request-User"] == "alice@example.com"


def test_an_explicit_rd_and_a_local_path_come_back_too(make_app, idp):
    app = app_for(make_app)
    response = app.get("/auth", {"rd": "https://wiki.example.com/start?x=1"}, extra_environ=PROXY, status=401)
    assert complete_signin(app, idp, response.headers["Location"]).headers["Location"] == (
        "https://wiki.example.com/start?x=1"
    )
    app.cookiejar.clear()
    response = app.get("/auth", {"rd": "/whoami"}, extra_environ=PROXY, status=401)
    assert complete_signin(app, idp, response.headers["Location"]).headers["Location"] == "http://localhost/whoami"


def test_without_a_url_from_the_proxy_the_browser_comes_back_to_the_gateway(make_app, idp, caplog):
    # No forward_auth.proxy: nobody says which page was asked for.
    app = make_app()
    response = app.get(
        "/auth", {"rd": ""}, headers={"X-Original-URL": "https://app.example.com/x"}, extra_environ=PROXY, status=401
    )
    assert response.headers["Location"] == "http://localhost/saml/login?next=%2F"
    assert "forward_auth.proxy is not set" in caplog.text
    assert complete_signin(app, idp, response.headers["Location"]).headers["Location"] == "http://localhost/"


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://example.com/",
        "https://app.example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "https://evil.example\\@app.example.com/",
        "https://[::1]/",
    ],
)
def test_a_page_on_a_host_not_allowed_gets_no_sign_in_redirect(make_app, proxy, url, caplog):
    app = app_for(make_app, proxy)
    parts = urllib.parse.urlsplit(url)
    response = app.get(
        "/auth",
        {"rd": ""},
        headers=original(proxy, parts.netloc, parts.path, parts.scheme),
        extra_environ=PROXY,
        status=401,
    )
    assert "Location" not in response.headers
    assert "refused redirect" in caplog.text


NEXT_REFUSED = [
    "https://evil.example/",
    "https://evil.example\\@app.example.com/",
    "https://app.example.com@evil.example/",
    "https://evil.example%2F@app.example.com/",
    "//evil.example",
    "//evil.example/",
    "/\\evil.example",
    "/\t/evil.example",
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    "https://app.example.com\n.evil.example/",
    "https://app.exa\tmple.com/",
    "https://0x7f.1/",
    "javascript:alert(1)",
    "ftp://app.example.com/",
    "https://app.example.com:/",
    "https://example.com/",
]


@pytest.mark.parametrize("target", NEXT_REFUSED)
def test_next_outside_the_allow_list_is_refused(make_app, target):
    app = app_for(make_app)
    refused(app.get("/saml/login", params={"next": target}, status=400), "unsafe_next")
    # /auth's rd is the same check: no sign-in redirect to it.
    assert "Location" not in app.get("/auth", {"rd": target}, extra_environ=PROXY, status=401).headers


def test_the_longest_url_is_kept_whole(make_app, idp, database_url):
    app = app_for(make_app, **{"sqlalchemy.url": database_url})
    url = "https://app.example.com/dashboard?state=" + "x" * (MAX_URL - len("https://app.example.com/dashboard?state="))
    assert len(url) == MAX_URL
    back = complete_signin(app, idp, signin_location(app, "nginx", url))
    assert back.headers["Location"] == url
    refused(app.get("/saml/login", params={"next": url + "x"}, status=400), "unsafe_next")


def test_a_host_no_longer_allowed_when_the_answer_comes_is_not_returned_to(make_app, idp, database_url):
    # The sign-in starts on an instance that allows wiki.example.com and ends on
    # one whose settings no longer do: the person lands on the gateway instead.
    first = app_for(make_app, **{"sqlalchemy.url": database_url})
    second = make_app(
        **{
            "sqlalchemy.url": database_url,
            "forward_auth.proxy": "nginx",
            "forward_auth.allowed_hosts": "partner.example.net",
        }
    )
    started = first.get("/saml/login", params={"next": "https://wiki.example.com/x"}, status=303)
    second.cookiejar = first.cookiejar
    response = post_response(second, idp.response(authn_request_id(started.headers["Location"])), status=303)
    assert response.headers["Location"] == "http://localhost/"


def test_a_deactivated_person_is_sent_to_sign_in_again_and_refused(make_app, idp):
    app = app_for(make_app)
    url = "https://app.example.com/deep/page?x=1"
    complete_signin(app, idp, signin_location(app, "nginx", url), name="dora@example.com")
    app.get("/auth", headers=original("nginx", "app.example.com", "/deep/page?x=1"), extra_environ=PROXY, status=200)
    set_user(app, "dora@example.com", active=False)
    location = signin_location(app, "nginx", url)
    started = app.get(location[len("http://localhost") :], status=303)
    refused(
        post_response(
            app, idp.response(authn_request_id(started.headers["Location"]), name_id="dora@example.com"), status=403
        ),
        "denied",
    )
    app.get("/auth", headers=original("nginx", "app.example.com", "/deep/page?x=1"), extra_environ=PROXY, status=401)


# ---------------------------------------------------------------- IdP-initiated (Entra's "Relay State")


@pytest.mark.parametrize(
    ("relay_state", "location"),
    [
        ("/welcome", "http://localhost/welcome"),
        ("https://app.example.com/deep/page?x=1", "https://app.example.com/deep/page?x=1"),
        ("https://partner.example.net:8443/", "https://partner.example.net:8443/"),
        ("", "http://localhost/"),
    ],
)
def test_idp_initiated_relay_state_may_name_an_allowed_app_page(make_app, idp, relay_state, location):
    app = app_for(make_app, **{"saml.allow_idp_initiated": "true"})
    response = post_response(app, idp.response(None), relay_state=relay_state, status=303)
    assert response.headers["Location"] == location


@pytest.mark.parametrize("relay_state", NEXT_REFUSED)
def test_idp_initiated_relay_state_elsewhere_is_refused(make_app, idp, relay_state):
    app = app_for(make_app, **{"saml.allow_idp_initiated": "true"})
    refused(post_response(app, idp.response(None), relay_state=relay_state, status=400), "unsafe_relay_state")
