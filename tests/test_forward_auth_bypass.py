"""Forward-auth rules cannot be walked around: by a header the browser adds, a respelled path or host, or IPv6.

In-process (webtest): each request is what a proxy sends to ``/auth`` for
the browser's request. The same cases through a real nginx and Caddy are in
the real-proxy tests; here every spelling is checked for every proxy
setting, through the view and through the fast path.
"""

import pytest
import webtest

from gateway import ConfigError
from saml_support import sign_in
from test_forward_auth import PROXY, STRANGER, add_to_group

RULES = """
    app.example.com     /reports  Finance
    app.example.com     /         *
    gitlab.example.com  /         Developers
"""

PROXIES = ["nginx", "traefik", "caddy"]

# Other spellings of /reports/q3: the /reports rule must decide them.
PROTECTED = [
    "/reports/q3",
    "/REPORTS/q3",
    "/Reports/Q3",
    "/%72eports/q3",
    "/%52EPORTS/q3",
    "/reports;jsessionid=x/q3",
    "/reports;/q3",
    "/reports/q3/",
    "/reports",
    "/reports/",
    "/reports?x=1",
    "/reports/q3?next=/public",
]

# No single normal form: refused for everybody on a host whose rules look at paths.
REFUSED = [
    "//reports/q3",
    "///reports/q3",
    "/reports//q3",
    "/x/../reports/q3",
    "/./reports/q3",
    "/reports/./q3",
    "/reports/q3/..",
    "/..;/reports/q3",
    "/x/..;/reports/q3",
    "/;x/reports/q3",
    "/%2freports/q3",
    "/reports%2Fq3",
    "/%2E%2E/reports/q3",
    "/.%2e/reports/q3",
    "/%2e/reports/q3",
    "/%5Creports/q3",
    "/\\reports/q3",
    "/%2572eports/q3",
    "/%3Breports/q3",
    "/%zz/reports",
    "/%/reports",
    "/%C3/reports",
    "/%C3%28/reports",
    "/%00/reports",
    "/reports%0a/q3",
    "/reports/q3\t",
    "/rep orts",
]

# Other spellings of app.example.com.
HOSTS = ["app.example.com", "APP.EXAMPLE.COM", "app.example.com.", "app.example.com:8443", "App.Example.Com.:443"]


def original(proxy: str, host: str, path: str, scheme: str = "https") -> dict:
    """The headers ``proxy`` sends to /auth for a browser's ``scheme://host path``."""
    if proxy == "nginx":
        return {"X-Original-URL": f"{scheme}://{host}{path}", "X-Original-Method": "GET"}
    return {"X-Forwarded-Proto": scheme, "X-Forwarded-Host": host, "X-Forwarded-Uri": path, "X-Forwarded-Method": "GET"}


def forged(proxy: str) -> dict:
    """What a browser adds to say it asked for the open page (the other proxy's headers)."""
    return original("caddy" if proxy == "nginx" else "nginx", "app.example.com", "/")


@pytest.fixture(params=PROXIES)
def proxy(request):
    return request.param


@pytest.fixture
def outsider(make_app, idp, proxy):
    """A signed-in person outside Finance, their identity already in memory."""
    app = make_app(**{"forward_auth.rules": RULES, "forward_auth.proxy": proxy})
    sign_in(app, idp, "olga@example.com")
    add_to_group(app, "olga@example.com", "Sales")
    app.get("/auth", headers=original(proxy, "app.example.com", "/"), extra_environ=PROXY, status=200)
    return app


def pyramid_only(app):
    """The same app without the fast path in front: what the view alone answers."""
    return webtest.TestApp(app.app.app, extra_environ=app.extra_environ, cookiejar=app.cookiejar)


def answers(app, headers, environ=PROXY) -> tuple[int, int]:
    """(fast path answer, view answer) for the same request."""
    fast = app.get("/auth", headers=headers, extra_environ=environ, expect_errors=True).status_int
    view = pyramid_only(app).get("/auth", headers=headers, extra_environ=environ, expect_errors=True).status_int
    return fast, view


def test_every_spelling_of_a_protected_path_is_protected(outsider, proxy):
    for host in HOSTS:
        for path in PROTECTED:
            headers = original(proxy, host, path)
            assert answers(outsider, headers) == (403, 403), (host, path)
            assert answers(outsider, {**headers, **forged(proxy)}) == (403, 403), (host, path)


def test_paths_without_one_normal_form_are_refused(outsider, proxy):
    for path in REFUSED:
        headers = original(proxy, "app.example.com", path)
        assert answers(outsider, headers) == (403, 403), path
        assert answers(outsider, {**headers, **forged(proxy)}) == (403, 403), path


def test_the_group_that_a_rule_names_gets_every_spelling_but_refused_ones(make_app, idp, proxy):
    app = make_app(**{"forward_auth.rules": RULES, "forward_auth.proxy": proxy})
    sign_in(app, idp, "fiona@example.com")
    add_to_group(app, "fiona@example.com", "Finance")
    for host in HOSTS:
        for path in PROTECTED:
            assert answers(app, original(proxy, host, path)) == (200, 200), (host, path)
    for path in REFUSED:
        assert answers(app, original(proxy, "app.example.com", path)) == (403, 403), path


def test_other_paths_stay_open(outsider, proxy):
    for path in ("/", "/home", "/reportsarchive", "/public/reports", "/%7Euser", "/a;b", "/reports.html"):
        assert answers(outsider, original(proxy, "app.example.com", path)) == (200, 200), path


def test_a_host_whose_rules_ignore_paths_never_refuses_a_path(make_app, idp, proxy):
    # GitLab's API names projects as group%2Fproject: its host's only rule is "/",
    # so the path plays no part and nothing is refused.
    app = make_app(**{"forward_auth.rules": RULES, "forward_auth.proxy": proxy})
    sign_in(app, idp, "devon@example.com")
    add_to_group(app, "devon@example.com", "Developers")
    for path in ("/api/v4/projects/group%2Fproject", "//x", "/a/../b", "/%zz"):
        assert answers(app, original(proxy, "gitlab.example.com", path)) == (200, 200), path


def test_forged_headers_of_the_other_proxy_are_never_read(make_app, idp, proxy):
    # The browser's own X-Original-URL (passed on by Caddy and Traefik) or
    # X-Forwarded-* (passed on by nginx) alone: the request is judged as the
    # /auth request itself, on the gateway's own host, which no rule names.
    app = make_app(**{"forward_auth.rules": RULES, "forward_auth.proxy": proxy})
    sign_in(app, idp, "mallory@example.com")
    assert answers(app, forged(proxy)) == (403, 403)
    assert answers(app, original(proxy, "app.example.com", "/")) == (200, 200)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-URL": "https://app.example.com@evil.example/"},
        {"X-Original-URL": "https://evil.example\\@app.example.com/"},
        {"X-Original-URL": "https://app.example.com\\@app.example.com/"},
        {"X-Original-URL": "/reports/q3"},
        {"X-Original-URL": "javascript://app.example.com/"},
        {"X-Original-URL": "https://app.example.com%2F/"},
        {"X-Forwarded-Host": "app.example.com/x", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "app.example.com@evil.example", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "app.example.com, app.example.com", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "app.example", "X-Forwarded-Uri": ".com/", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "@evil.example/", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "javascript"},
    ],
)
def test_an_odd_original_url_is_denied(make_app, idp, headers):
    proxy = "nginx" if "X-Original-URL" in headers else "caddy"
    app = make_app(**{"forward_auth.rules": "* / *", "forward_auth.proxy": proxy})
    sign_in(app, idp, "olga@example.com")
    assert answers(app, headers) == (403, 403)


def test_a_proxy_on_ipv4_mapped_ipv6_is_trusted(outsider, proxy):
    # Listening on [::], the server sees an IPv4 proxy as ::ffff:127.0.0.1.
    for address in ("::ffff:127.0.0.1", "::ffff:7f00:1", "::1", "127.0.0.1"):
        environ = {"REMOTE_ADDR": address}
        assert answers(outsider, original(proxy, "app.example.com", "/"), environ) == (200, 200), address
        assert answers(outsider, original(proxy, "app.example.com", "/reports/q3"), environ) == (403, 403), address


def test_a_stranger_on_ipv6_is_not_trusted(make_app, idp):
    app = make_app(**{"forward_auth.rules": "app.example.com / *", "forward_auth.proxy": "nginx"})
    sign_in(app, idp, "olga@example.com")
    headers = original("nginx", "app.example.com", "/")
    assert answers(app, headers, {"REMOTE_ADDR": "::ffff:127.0.0.1"}) == (200, 200)
    for address in ("::ffff:203.0.113.9", "::ffff:128.0.0.1", "::ffff:0:127.0.0.1", STRANGER["REMOTE_ADDR"]):
        assert answers(app, headers, {"REMOTE_ADDR": address}) == (403, 403), address


def test_case_sensitive_paths_for_case_sensitive_apps(make_app, idp):
    app = make_app(
        **{"forward_auth.rules": RULES, "forward_auth.proxy": "nginx", "forward_auth.case_sensitive_paths": "true"}
    )
    sign_in(app, idp, "olga@example.com")
    assert answers(app, original("nginx", "app.example.com", "/reports/q3")) == (403, 403)
    assert answers(app, original("nginx", "app.example.com", "/%72eports/q3")) == (403, 403)
    # To a case-sensitive app /REPORTS is another page, which the "/" rule opens.
    assert answers(app, original("nginx", "app.example.com", "/REPORTS/q3")) == (200, 200)


def test_rule_prefixes_are_normalised_too(make_app, idp):
    app = make_app(
        **{
            "forward_auth.rules": "app.example.com /Berichte/über Finance\napp.example.com / *",
            "forward_auth.proxy": "nginx",
        }
    )
    sign_in(app, idp, "olga@example.com")
    for path in ("/berichte/%C3%BCber", "/BERICHTE/%C3%BCber/x", "/Berichte/%c3%bcber"):
        assert answers(app, original("nginx", "app.example.com", path)) == (403, 403), path


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"forward_auth.rules": "* / *"}, "forward_auth.proxy: required when forward_auth.rules"),
        ({"forward_auth.allowed_hosts": "*.example.com"}, "forward_auth.proxy: required when"),
        ({"forward_auth.proxy": "apache"}, "forward_auth.proxy: expected one of nginx, traefik, caddy"),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": "https://app.example.com"},
            "forward_auth.allowed_hosts: expected host names",
        ),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": "app.example.com:8443"},
            "forward_auth.allowed_hosts: expected host names",
        ),
        ({"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": "*"}, "forward_auth.allowed_hosts: expected"),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": "*.10.0.0.1"},
            "forward_auth.allowed_hosts: expected",
        ),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.rules": "app.example.com /a//b *"},
            "forward_auth.rules: expected",
        ),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.rules": "app.example.com /a/../b *"},
            "forward_auth.rules: expected",
        ),
        (
            {"forward_auth.proxy": "nginx", "forward_auth.rules": "app.example.com /a%2Fb *"},
            "forward_auth.rules: expected",
        ),
        ({"forward_auth.header_encoding": "latin-1"}, "forward_auth.header_encoding: expected one of utf-8, percent"),
        ({"forward_auth.case_sensitive_paths": "maybe"}, "forward_auth.case_sensitive_paths: expected true or false"),
    ],
)
def test_bad_forward_auth_settings_stop_start_up(make_app, settings, message):
    with pytest.raises(ConfigError) as info:
        make_app(**settings)
    assert str(info.value).startswith(message)


def test_allowed_hosts_are_read_as_a_browser_reads_them(make_app):
    from gateway.settings import parse_host_patterns

    assert parse_host_patterns("App.Example.com. *.Example.NET") == ("app.example.com", "*.example.net")
