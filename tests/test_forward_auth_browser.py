"""The signed-out round trip in Chromium, behind real nginx and real Caddy running the docs' configurations.

Real host names: Chromium maps ``*.example.test`` to 127.0.0.1
(``--host-resolver-rules``), the gateway is ``https://auth.example.test:PORT``
with ``session.cookie_domain = .example.test``, the app
``https://app.example.test:PORT``, both through the proxy, and the IdP's
sign-in page ``http://idp.example.test:PORT`` (a page like the development
IdP's, "Pick a test user", signing Entra-shaped responses with the test IdP:
the development IdP plugin runs only in a gateway on localhost, see
proxy_support.IdpServer). People come from SCIM, as Entra provisions them.

- A signed-out visit to ``/deep/page?x=1`` goes to the IdP's page and,
  after picking a person, ends on that same page of the app, with the
  identity headers (a non-ASCII name among them); the session cookie is
  the gateway's, for ``.example.test``, Secure and HttpOnly.
- A sign-in that would send the browser to a host not allowed is refused;
  behind nginx, an app on such a host gets a plain 401, never a sign-in.
- A person deactivated over SCIM is sent to sign in again on their next
  visit, and refused there; the app never sees them again.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port
from proxy_support import (
    APP_HOST,
    AUTH_HOST,
    Echo,
    Gateway,
    IdpServer,
    Proxy,
    launch_chromium,
    make_tls,
    proxy_param,
    start_gateway,
    start_proxy,
    stop_gateway,
    stop_proxy,
)

# One worker runs the whole module (with --dist loadgroup), so each stack starts once.
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("forward-auth-browser")]

RULES = f"""
{APP_HOST} /reports Finance
{APP_HOST} / *
"""


@dataclass
class Stack:
    kind: str
    gateway: Gateway
    proxy: Proxy
    echo: Echo
    idp: IdpServer
    folder: Path
    users: dict[str, str]  # user name -> SCIM id

    def app_url(self, target: str) -> str:
        return f"https://{APP_HOST}:{self.proxy.port}{target}"

    def auth_url(self, target: str) -> str:
        return f"https://{AUTH_HOST}:{self.proxy.port}{target}"


@pytest.fixture(scope="module", params=[proxy_param("nginx"), proxy_param("caddy")])
def stack(request, tmp_path_factory, idp):
    (kind,) = request.param
    folder = tmp_path_factory.mktemp(f"{kind}-browser")
    port = free_port()
    base_url = f"https://{AUTH_HOST}:{port}"
    people = {"bob@example.com": "Bob Bäcker", "carol@example.com": "Carol Contractor"}
    signin_page = IdpServer(idp, folder, base_url, people)
    echo = Echo()
    gateway = start_gateway(
        folder / "gateway",
        base_url=base_url,
        idp_metadata=str(signin_page.metadata),
        settings={
            "forward_auth.proxy": kind,
            "forward_auth.allowed_hosts": APP_HOST,
            "forward_auth.rules": RULES,
        },
    )
    proxy = None
    try:
        proxy = start_proxy(
            kind,
            folder / kind,
            gateway=f"127.0.0.1:{gateway.port}",
            app_port=echo.port,
            tls=make_tls(folder / "tls"),
            port=port,
        )
        # The people on the IdP's page, provisioned over SCIM as Entra would.
        users = {}
        for user_name, display_name, group in (
            ("bob@example.com", "Bob Bäcker", "Staff"),
            ("carol@example.com", "Carol Contractor", "Contractors"),
        ):
            user = gateway.create_user(user_name, display_name, email=user_name)
            gateway.create_group(group, [user["id"]])
            users[user_name] = user["id"]
        yield Stack(kind, gateway, proxy, echo, signin_page, folder, users)
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        stop_gateway(gateway)
        echo.close()
        signin_page.close()
    log = gateway.log()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(ignore_https_errors=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in_at_the_idp(page, stack, email: str) -> None:
    """On the IdP's page (the browser was sent there), pick ``email``."""
    page.wait_for_selector("text=Pick a test user")
    assert page.url.startswith(f"{stack.idp.url}/saml2?SAMLRequest="), page.url
    page.click(f'button[data-email="{email}"]')


def test_a_signed_out_visit_ends_signed_in_on_that_same_page(stack, page):
    target = stack.app_url("/deep/page?x=1")
    page.goto(target)
    sign_in_at_the_idp(page, stack, "bob@example.com")
    page.wait_for_url(target)
    assert page.inner_text("#uri") == "/deep/page?x=1"
    assert page.inner_text("#x-auth-request-user") == "bob@example.com"
    assert page.inner_text("#x-auth-request-name") == "Bob Bäcker"
    assert page.inner_text("#x-auth-request-email") == "bob@example.com"
    assert page.inner_text("#x-auth-request-groups") == "Staff"
    assert page.inner_text("#x-auth-request-user-id") == stack.users["bob@example.com"]
    page.screenshot(path=str(stack.folder / f"round-trip-{stack.kind}.png"))

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["gateway_session"]
    assert session["domain"] == ".example.test"
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"

    # Signed in now: another page of the app opens at once, and the protected part stays shut.
    response = page.goto(stack.app_url("/other"))
    assert response.status == 200 and page.url == stack.app_url("/other")
    response = page.goto(stack.app_url("/REPORTS/q3"))
    assert response.status == 403 and page.url == stack.app_url("/REPORTS/q3")


@pytest.mark.parametrize(
    "next_url",
    ["https://elsewhere.example.test:{port}/deep/page", "https://evil.example\\@app.example.test:{port}/"],
)
def test_a_sign_in_that_would_end_on_a_host_not_allowed_is_refused(stack, page, next_url):
    next_url = next_url.format(port=stack.proxy.port)
    response = page.goto(stack.auth_url("/saml/login?next=" + urllib.parse.quote(next_url, safe="")))
    assert response.status == 400
    assert page.url.startswith(stack.auth_url("/saml/login")), page.url  # never sent to the IdP, nor there


def test_an_app_on_a_host_not_allowed_gets_no_sign_in(stack, page):
    if stack.kind != "nginx":
        pytest.skip("Caddy serves only the hosts its Caddyfile names")
    before = len(stack.echo.seen)
    # nginx's first server block (the app's) also answers hosts nobody configured.
    response = page.goto(f"https://other.example.test:{stack.proxy.port}/deep/page")
    assert response.status == 401
    assert page.url == f"https://other.example.test:{stack.proxy.port}/deep/page"
    assert stack.echo.reached(before) == []


def test_a_deactivated_person_is_sent_to_sign_in_again_and_refused(stack, page):
    target = stack.app_url("/deep/page?x=1")
    page.goto(target)
    sign_in_at_the_idp(page, stack, "carol@example.com")
    page.wait_for_url(target)
    assert page.inner_text("#x-auth-request-user") == "carol@example.com"
    # The page's own late requests (Chromium asks for /favicon.ico after the load) were let
    # through while she was signed in: they finish before she is deactivated and counted from.
    page.wait_for_load_state("networkidle")

    stack.gateway.set_active(stack.users["carol@example.com"], False)
    before = len(stack.echo.seen)
    page.goto(target)
    sign_in_at_the_idp(page, stack, "carol@example.com")  # sent to sign in again
    page.wait_for_url(stack.auth_url("/saml/acs"))
    assert "deactivated" in page.content(), page.inner_text("body")
    page.screenshot(path=str(stack.folder / f"deactivated-{stack.kind}.png"))
    assert stack.echo.reached(before) == []
    page.goto(target)  # and still signed out
    assert page.url.startswith(f"{stack.idp.url}/saml2?SAMLRequest=")
    assert stack.echo.reached(before) == []
