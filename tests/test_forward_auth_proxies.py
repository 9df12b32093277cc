"""Forward-auth through real nginx and real Caddy running the docs' configurations (docs/proxies/).

Each stack is ``pserve`` (the gateway, people and groups provisioned over
its SCIM API, people signed in with signed Entra-shaped SAML responses
through the proxy) + the echo app + the proxy over TLS, started once per
module for each of:

- nginx and Caddy, the gateway on 127.0.0.1;
- nginx, the gateway listening on ``[::]`` and the proxy connecting to
  127.0.0.1 (so the gateway sees ``::ffff:127.0.0.1``);
- Caddy, the gateway listening on ``[::]`` and the proxy connecting to ``[::1]``;
  these two also keep the groups header small (``forward_auth.pass_groups``
  names the groups to pass on).

What is proven, for each: a signed-out visit is sent to sign in and comes
back to that exact URL; names and group names in Latin, CJK and emoji reach
the app as their UTF-8 bytes; a browser's own identity headers never reach
the app; a person in 150 groups with long names gets through with every
group; and none of the respellings of a protected path, nor forged
``X-Original-URL`` / ``X-Forwarded-*`` headers, nor a respelled host, lets a
person outside the group in (403, and the app never sees the request),
while the member gets the page.
"""

from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import free_port
from proxy_support import (
    APP_HOST,
    AUTH_HOST,
    HAVE_IPV6,
    LONG_GROUP,
    Echo,
    Gateway,
    Proxy,
    make_tls,
    proxy_param,
    raw_request,
    start_gateway,
    start_proxy,
    stop_gateway,
    stop_proxy,
)

# One worker runs the whole module (with --dist loadgroup), so each stack starts once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("forward-auth-proxies")]

RULES = f"""
{APP_HOST} /reports Finance
{APP_HOST} / *
"""

#: Groups passed on by the stacks that keep the groups header small (forward_auth.pass_groups as a list).
SMALL_GROUPS = 'Finance Staff "Équipe Zoë" "Ventas España" 财务部 "🚀 Launch"'

#: (proxy, where the gateway listens, the address the proxy connects to, forward_auth.pass_groups)
NO_IPV6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1) on this machine")
STACKS = [
    proxy_param("nginx", "127.0.0.1", "127.0.0.1", "all"),
    proxy_param("caddy", "127.0.0.1", "127.0.0.1", "all"),
    proxy_param("nginx", "[::]", "127.0.0.1", SMALL_GROUPS, id="nginx-gateway-on-[::]-small-groups", marks=[NO_IPV6]),
    proxy_param(
        "caddy", "[::]", "[::1]", SMALL_GROUPS, id="caddy-gateway-on-[::]-via-[::1]-small-groups", marks=[NO_IPV6]
    ),
]

#: People whose names are not ASCII, and a group of theirs that is not either.
UNICODE_PEOPLE = {
    "zoe@example.com": ("Zoë", "Équipe Zoë"),
    "jose@example.com": ("José Núñez", "Ventas España"),
    "lilei@example.com": ("李雷", "财务部"),
    "ana@example.com": ("Ana 🦊✨", "🚀 Launch"),
}


@dataclass
class Person:
    user_name: str
    display_name: str
    user_id: str
    groups: list[str]
    cookie: str = ""


@dataclass
class Stack:
    kind: str
    pass_groups: str
    gateway: Gateway
    proxy: Proxy
    echo: Echo
    people: dict[str, Person] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # display name -> SCIM id

    @property
    def app_host(self) -> str:
        return f"{APP_HOST}:{self.proxy.port}"

    def app_url(self, target: str) -> str:
        return f"https://{self.app_host}{target}"

    def get(self, target: str, person: str | None = None, *, headers=(), host: str | None = None):
        """(the proxy's answer, the requests that reached the app meanwhile)."""
        before = len(self.echo.seen)
        cookie = self.people[person].cookie if person else None
        sent = [("Accept", "application/json"), *headers]
        answer = self.proxy.request(target, host=host, cookie=cookie, headers=sent)
        return answer, self.echo.reached(before)

    def join(self, user_id: str, groups) -> None:
        """Put the user in these groups; a group is made (with an object id as external id) when new."""
        for name in groups:
            if name in self.groups:
                self.gateway.add_member(self.groups[name], user_id)
            else:
                made = self.gateway.create_group(name, [user_id], external_id=str(uuid.uuid4()))
                self.groups[name] = made["id"]

    def provision(
        self, user_name: str, display_name: str, groups=(), email: str | None = None, idp=None, drop_claims=()
    ) -> Person:
        """A SCIM user in these groups (made when new), signed in through the proxy."""
        user = self.gateway.create_user(user_name, display_name, email=email)
        self.join(user["id"], groups)
        person = Person(user_name, display_name, user["id"], list(groups))
        if idp is not None:
            person.cookie = self.gateway.sign_in(idp, user_name, via=self.proxy, drop_claims=drop_claims)
        self.people[user_name] = person
        return person


@pytest.fixture(scope="module", params=STACKS)
def stack(request, tmp_path_factory, idp, idp_metadata_file):
    kind, listen, upstream, pass_groups = request.param
    folder = tmp_path_factory.mktemp(f"{kind}-stack")
    echo = Echo()
    port = free_port()
    gateway = start_gateway(
        folder / "gateway",
        base_url=f"https://{AUTH_HOST}:{port}",
        idp_metadata=idp_metadata_file,
        listen_host=listen,
        settings={
            "forward_auth.proxy": kind,
            "forward_auth.allowed_hosts": APP_HOST,
            "forward_auth.rules": RULES,
            "forward_auth.pass_groups": pass_groups,
        },
    )
    proxy = None
    try:
        proxy = start_proxy(
            kind,
            folder / kind,
            gateway=f"{upstream}:{gateway.port}",
            app_port=echo.port,
            tls=make_tls(folder / "tls"),
            port=port,
        )
        built = Stack(kind, pass_groups, gateway, proxy, echo)
        built.provision("fiona@example.com", "Fiona Finance", ["Finance"], email="fiona@example.com", idp=idp)
        built.provision("oscar@example.com", "Oscar Outsider", ["Staff"], email="oscar@example.com", idp=idp)
        # In no group: the gateway's groups header is empty.
        built.provision("nora@example.com", "Nora Nobody", idp=idp)
        for user_name, (display_name, group) in UNICODE_PEOPLE.items():
            built.provision(user_name, display_name, [group], email=user_name, idp=idp)
        yield built
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        stop_gateway(gateway)
        echo.close()
    log = gateway.log()
    assert "Traceback" not in log, log


# ---------------------------------------------------------------- the signed-out round trip


def test_a_signed_out_visit_is_sent_to_sign_in_and_back_to_that_url(stack, idp):
    target = "/deep/page?x=1"
    answer, reached = stack.get(target)
    assert answer.status == 302, (answer.status, answer.text)
    assert reached == []
    location = answer.header("Location").decode()
    login = urllib.parse.urlsplit(location)
    assert f"{login.scheme}://{login.netloc}" == stack.gateway.base_url and login.path == "/saml/login"
    assert urllib.parse.parse_qs(login.query)["next"] == [stack.app_url(target)]

    # The sign-in that URL starts (through the proxy, like the browser) ends on that very URL.
    acs = stack.gateway.sign_in_answer(idp, "oscar@example.com", via=stack.proxy, login=f"{login.path}?{login.query}")
    assert acs.status == 303, (acs.status, acs.text[:1000])
    assert acs.header("Location").decode() == stack.app_url(target)
    cookie = acs.cookies()["gateway_session"]

    before = len(stack.echo.seen)
    answer = stack.proxy.request(target, cookie=cookie, headers=[("Accept", "application/json")])
    assert answer.status == 200, (answer.status, answer.text)
    seen = stack.echo.reached(before)
    assert [r["uri"] for r in seen] == [target]
    headers = seen[0]["headers"]
    assert headers["X-Auth-Request-User"] == "oscar@example.com"
    assert headers["X-Auth-Request-Email"] == "oscar@example.com"
    assert headers["X-Auth-Request-Name"] == "Oscar Outsider"
    assert headers["X-Auth-Request-Groups"] == "Staff"
    assert headers["X-Auth-Request-User-Id"] == stack.people["oscar@example.com"].user_id


@pytest.mark.parametrize(
    "next_url",
    [
        "https://elsewhere.example.test/",
        "https://evil.example\\@app.example.test/",
        "https://app.example.test@evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ],
)
def test_sign_in_refuses_to_send_the_browser_anywhere_else(stack, next_url):
    answer = raw_request(
        stack.proxy.port,
        "/saml/login?next=" + urllib.parse.quote(next_url, safe=""),
        host=f"{AUTH_HOST}:{stack.proxy.port}",
    )
    assert answer.status == 400, (answer.status, answer.text[:500])
    assert answer.header("Location") is None


def test_a_signed_out_visit_to_a_host_not_allowed_gets_no_sign_in_redirect(stack):
    if stack.kind != "nginx":
        pytest.skip("Caddy serves only the hosts its Caddyfile names (no certificate for others)")
    # nginx's first server block (the app's) also answers hosts nobody configured.
    answer, reached = stack.get("/", host=f"other.example.test:{stack.proxy.port}")
    assert answer.status == 401, (answer.status, answer.text)
    assert answer.header("Location") is None
    assert reached == []


# ---------------------------------------------------------------- identity headers


@pytest.mark.parametrize("user_name", list(UNICODE_PEOPLE))
def test_names_reach_the_app_as_utf8(stack, user_name):
    display_name, group = UNICODE_PEOPLE[user_name]
    answer, reached = stack.get("/", user_name)
    assert answer.status == 200, (answer.status, answer.text)
    headers = reached[0]["headers"]
    assert headers["X-Auth-Request-Name"] == display_name
    assert headers["X-Auth-Request-Groups"] == group


def test_a_browsers_own_identity_headers_never_reach_the_app(stack):
    forged = [
        ("X-Auth-Request-User-Id", "00000000-0000-0000-0000-000000000000"),
        ("X-Auth-Request-User", "root@example.com"),
        ("X-Auth-Request-Email", "root@example.com"),
        ("X-Auth-Request-Name", "Root"),
        ("X-Auth-Request-Groups", "Finance,Gateway Admins"),
    ]
    # Nora is in no group: the gateway's groups header is empty, and the browser's must not stand in for it.
    answer, reached = stack.get("/", "nora@example.com", headers=forged)
    assert answer.status == 200, (answer.status, answer.text)
    headers = reached[0]["headers"]
    assert headers["X-Auth-Request-User"] == "nora@example.com"
    assert headers["X-Auth-Request-User-Id"] == stack.people["nora@example.com"].user_id
    assert headers["X-Auth-Request-Name"] == "Nora Nobody"
    assert headers["X-Auth-Request-Email"] == "nora@example.com"
    assert headers.get("X-Auth-Request-Groups", "") == ""

    # Signed out, the forged headers do not get anybody in either.
    answer, reached = stack.get("/", headers=forged)
    assert answer.status == 302 and reached == []


# ---------------------------------------------------------------- many groups


@pytest.fixture(scope="module")
def many_groups(stack, idp):
    """Mia: a member of 150 groups (the most Entra puts in a token), Finance and 149 with long names.

    Each has an Entra object id as external id. Every name passed on is
    about 37 KB of header, nine times nginx's default buffer.
    """
    gateway = stack.gateway
    user = gateway.create_user("mia@example.com", "Mia Many", email="mia@example.com")
    names = ["Finance"] + [LONG_GROUP.format(i) for i in range(149)]
    assert {len(name) for name in names[1:]} == {250}
    stack.join(user["id"], names)
    person = Person("mia@example.com", "Mia Many", user["id"], names)
    person.cookie = gateway.sign_in(idp, "mia@example.com", via=stack.proxy)
    stack.people[person.user_name] = person
    return person


def test_a_person_in_150_groups_with_long_names_gets_through(stack, many_groups):
    for target in ("/dashboard", "/reports/q3"):
        answer, reached = stack.get(target, "mia@example.com")
        assert answer.status == 200, (answer.status, answer.text[:500], stack.proxy.log()[-2000:])
        groups = reached[0]["headers"]["X-Auth-Request-Groups"]
        if stack.pass_groups == "all":
            assert len(groups.encode()) > 37_000
            assert sorted(groups.split(",")) == sorted(many_groups.groups)
        else:
            assert groups == "Finance"  # the one of hers that forward_auth.pass_groups names


# ---------------------------------------------------------------- no way around the rules

#: The respellings of /reports/q3 the issue names: each must get the outsider a 403.
SPELLINGS = [
    "/reports/q3",
    "/REPORTS/q3",
    "/%72eports/q3",
    "//reports/q3",
    "/x/../reports/q3",
    "/reports;x/q3",
    "/reports%2Fq3",
    "/reports/%2e%2e/reports",
]

#: More of them. A proxy may refuse some itself (nginx answers 400 for a path that climbs above /).
MORE_SPELLINGS = [
    "/Reports/q3",
    "/reports/q3/",
    "/reports?x=1",
    "/reports/./q3",
    "/./reports/q3",
    "/reports/q3/..",
    "/..;/reports/q3",
    "/x/..;/reports",
    "/%2freports/q3",
    "/%2E%2E/reports",
    "/.%2e/reports",
    "/%5Creports",
    "/%25%37%32eports/q3",
    "/reports;jsessionid=x/q3",
    "/%2Freports/q3",
    "/REPORTS%2fq3",
]

#: Headers a browser may add to pick a friendlier rule.
FORGED = {
    "no forged header": [],
    "X-Original-URL": [("X-Original-URL", f"http://{APP_HOST}/")],
    "X-Forwarded-Uri": [("X-Forwarded-Uri", "/")],
    "X-Forwarded-Host": [("X-Forwarded-Host", "other")],
    "all of them": [
        ("X-Original-URL", f"https://{APP_HOST}/"),
        ("X-Original-Method", "GET"),
        ("X-Forwarded-Uri", "/"),
        ("X-Forwarded-Host", "other"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Method", "GET"),
    ],
}


def _hosts(stack) -> list[tuple[str, bool]]:
    """The app's host as browsers and tools may spell it; whether the proxy sends it to the app at all.

    nginx matches ``server_name`` without the trailing dot; Caddy's site
    address does not match ``app.example.test.``, so Caddy answers it
    itself (an empty 200) and neither the gateway nor the app is asked.
    """
    port = stack.proxy.port
    return [
        (f"{APP_HOST}:{port}", True),
        (f"{APP_HOST}.:{port}", stack.kind == "nginx"),
        (f"{APP_HOST.upper()}:{port}", True),
        (APP_HOST, True),
    ]


def _outsider_attempts(stack, target: str, allowed=(403,)) -> list[str]:
    """Every host spelling x forged header for ``target`` as Oscar (outside Finance); what went wrong.

    Wrong: the app saw the request, or a host the proxy routes to the app
    was answered other than ``allowed``.
    """
    wrong = []
    for host, routed in _hosts(stack):
        for label, headers in FORGED.items():
            answer, reached = stack.get(target, "oscar@example.com", headers=headers, host=host)
            if reached or (routed and answer.status not in allowed):
                wrong.append(f"{target} Host: {host}, {label}: {answer.status}, reached the app: {bool(reached)}")
            elif not routed and answer.body:
                wrong.append(f"{target} Host: {host}, {label}: {answer.status} {answer.text[:200]!r}")
    return wrong


@pytest.mark.parametrize("target", SPELLINGS)
def test_a_protected_path_refuses_an_outsider_however_it_is_spelled(stack, target):
    wrong = _outsider_attempts(stack, target)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("target", MORE_SPELLINGS)
def test_more_spellings_never_reach_the_app(stack, target):
    # 403 from the gateway, or nginx's own 400 for a path it will not serve at all (one that climbs above /).
    wrong = _outsider_attempts(stack, target, allowed=(400, 403) if stack.kind == "nginx" else (403,))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_every_method_is_judged_by_the_same_rules(stack, method):
    for person, expected in (("oscar@example.com", 403), ("fiona@example.com", 200)):
        before = len(stack.echo.seen)
        answer = stack.proxy.request(
            "/reports/q3",
            cookie=stack.people[person].cookie,
            method=method,
            body=b"x=1" if method in ("POST", "PUT") else b"",
        )
        reached = stack.echo.reached(before)
        assert answer.status == expected, (method, person, answer.status, answer.text)
        assert [r["method"] for r in reached] == ([method] if expected == 200 else [])


def test_an_absolute_request_target_is_no_way_around(stack):
    port = stack.proxy.port
    wrong = []
    for target in (
        f"https://{APP_HOST}:{port}/reports/q3",
        f"https://{APP_HOST}/reports/q3",
        f"http://{APP_HOST}:{port}/REPORTS/q3",
        f"https://{APP_HOST}:{port}//reports/q3",
    ):
        for label, headers in FORGED.items():
            answer, reached = stack.get(target, "oscar@example.com", headers=headers)
            if reached or answer.status not in (400, 403):
                wrong.append(f"{target} {label}: {answer.status}, reached the app: {bool(reached)}")
    assert not wrong, "\n".join(wrong)


def test_the_member_gets_the_protected_page(stack):
    for host, routed in _hosts(stack):
        if not routed:
            continue
        for label, headers in FORGED.items():
            answer, reached = stack.get("/reports/q3", "fiona@example.com", headers=headers, host=host)
            assert answer.status == 200, (host, label, answer.status, answer.text)
            assert [r["uri"] for r in reached] == ["/reports/q3"]
            assert reached[0]["headers"]["X-Auth-Request-User"] == "fiona@example.com"


def test_the_outsider_gets_the_rest_of_the_app(stack):
    for target in ("/", "/reportsarchive", "/home?x=1"):
        answer, reached = stack.get(target, "oscar@example.com")
        assert answer.status == 200, (target, answer.status, answer.text)
        assert [r["uri"] for r in reached] == [target]
