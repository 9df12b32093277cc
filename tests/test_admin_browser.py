"""The admin console in a real headless Chromium, as a person uses it; axe-core on every page.

Two ways in: the development IdP of development.ini (``./dev run``), and the
test IdP the SAML tests use (tests/saml_support.py), which answers in the
browser on a local port in place of Entra (gateway.testing.idp_server).

Screenshots of the dashboard and of a user's page are written to
docs/_static/ when ``GATEWAY_UPDATE_SCREENSHOTS=1`` (else to the test's
temporary folder, so a test run leaves the work tree as it was).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import SESSION_SECRET, free_port
from test_browser_signin import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def chromium():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"Chromium not found at {CHROMIUM}: `./dev test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path):
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "_static"
    return tmp_path


def watch_csp(page) -> list[str]:
    """Console messages that report a Content-Security-Policy violation (there must be none)."""
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return violations


def check_accessibility(page, label: str) -> None:
    """axe-core on the page as shown: no serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{label}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in bad
    )


def console_pages(page, base: str) -> list[str]:
    """Every page the console's navigation links to."""
    page.goto(base + "/admin")
    return [
        base + href
        for href in page.eval_on_selector_all("nav.admin-nav a", "links => links.map(a => a.getAttribute('href'))")
    ]


def scim_status(base: str, token: str) -> int:
    request = urllib.request.Request(base + "/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ---------------------------------------------------------------- the development IdP


@pytest.fixture
def development(tmp_path, pserve):
    """``pserve development.ini`` (a copy, its database in tmp_path) on a free port."""
    port = free_port()
    ini = tmp_path / "development.ini"
    ini.write_text((ROOT / "development.ini").read_text().replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
    server = pserve(ini, port)
    yield server.url
    output = server.log_path.read_text()
    assert "Traceback" not in output, output


def pick(page, email: str) -> None:
    page.wait_for_selector("text=Pick a test user")
    page.click(f'button[data-email="{email}"]')


def test_alice_runs_the_console_from_the_development_idp(development, chromium, screenshots):
    base = development
    alice = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = alice.new_page()
    csp = watch_csp(page)
    page.goto(base + "/admin/users?q=bob")
    pick(page, "alice@example.com")
    page.wait_for_url(base + "/admin/users?q=bob")  # sent through sign-in, and back

    # Bob signs in in another browser; he is not an admin.
    bob = chromium.new_context().new_page()
    bob.goto(base + "/")
    bob.click("#sign-in")
    pick(bob, "bob@example.com")
    bob.wait_for_url(base + "/")
    assert bob.goto(base + "/admin").status == 403
    assert "You are not an administrator" in bob.inner_text("h1")
    check_accessibility(bob, "403 page")

    # Alice searches for him and opens his page.
    page.goto(base + "/admin/users")
    page.fill("#q", "bob")
    page.click("#search")
    page.wait_for_url(re.compile(r".*/admin/users\?q=bob.*"))
    page.click("#users a:text('bob@example.com')")
    page.wait_for_selector("#sessions")
    assert page.inner_text("h1") == "Bob Builder"
    assert "Chrome" in page.inner_text("#sessions")
    check_accessibility(page, "user page")

    # End his session: his browser is signed out at once.
    page.click("#sessions button.end-session")
    page.wait_for_selector("#notice")
    assert "The session was ended" in page.inner_text("#notice")
    assert bob.goto(base + "/whoami").status == 401

    # A SCIM token: created, shown once with a copy button, used, revoked.
    page.goto(base + "/admin/tokens")
    page.fill("#token-name", "entra-browser")
    page.click("#create-token")
    page.wait_for_selector("#new-token")
    secret = page.inner_text("#new-token").strip()
    assert page.is_visible('button[data-copy="new-token"]')  # the script showed it
    check_accessibility(page, "token created")
    assert scim_status(base, secret) == 200
    page.goto(base + "/admin/tokens")
    assert secret not in page.content()
    page.click("#token-entra-browser button.revoke-token")
    page.wait_for_selector("#notice")
    assert scim_status(base, secret) == 401

    # Every page of the console passes axe-core; the two for the docs are photographed.
    for url in console_pages(page, base):
        page.goto(url)
        check_accessibility(page, url)
    page.goto(base + "/admin")
    page.screenshot(path=str(screenshots / "admin-dashboard.png"), full_page=True)
    page.goto(base + "/admin/users?q=alice")
    page.click("#users a:text('alice@example.com')")
    page.wait_for_selector("#profile")
    page.screenshot(path=str(screenshots / "admin-user.png"), full_page=True)
    for url in (page.url, base + "/admin/groups", base + "/admin/sessions?user=alice@example.com"):
        page.goto(url)
        check_accessibility(page, url)
    group_link = page.goto(base + "/admin/groups") and page.get_attribute("#groups a", "href")
    page.goto(base + group_link)
    check_accessibility(page, "group page")
    assert csp == [], csp
    alice.close()


# ---------------------------------------------------------------- the test IdP, in place of Entra

ADMIN = "admin@example.com"


@pytest.fixture
def entra(idp, gateway_idp_server):
    """The kit's IdP server in place of Entra, answering as an admin (its page's button is ``#continue``)."""
    gateway_idp_server.people = {
        ADMIN: idp.claims(ADMIN, oid="11111111-1111-4111-8111-111111111111", groups=("Gateway Admins",)),
    }
    return gateway_idp_server


@pytest.fixture
def with_test_idp(tmp_path, pserve, entra):
    """A gateway trusting the SAML tests' IdP (at ``entra``'s local address), served by pserve."""
    port = free_port()
    base = entra.gateway_url = f"http://127.0.0.1:{port}"
    metadata = entra.write_metadata(tmp_path / "idp-metadata.xml")
    ini = tmp_path / "gateway.ini"
    server = (ROOT / "development.ini").read_text().split("[server:main]", 1)[1].split("[loggers]", 1)[0]
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\n"
        f"gateway.base_url = {base}\n"
        "gateway.plugins = entra sqlstore audit\n"
        'gateway.admin_groups = "Gateway Admins"\n'
        f"sqlalchemy.url = sqlite:///{tmp_path}/gateway.sqlite\n"
        f"saml.idp_metadata = {metadata}\n"
        "provisioning.mode = scim first_login\n"
        f"session.secret = {SESSION_SECRET}\nsession.cookie_secure = false\n"
        "[server:main]" + server.replace("127.0.0.1:6543", f"127.0.0.1:{port}")
    )
    served = pserve(ini, port)
    yield served.url, f"sqlite:///{tmp_path}/gateway.sqlite"
    assert "Traceback" not in served.log_path.read_text()


def test_an_admin_signs_in_through_entra_and_signs_in_again_for_a_sensitive_action(with_test_idp, entra, chromium):
    from gateway.db import create_engine
    from gateway.db.models import SsoSession

    base, database = with_test_idp
    context = chromium.new_context()
    page = context.new_page()
    csp = watch_csp(page)
    page.goto(base + "/admin/tokens")
    page.click("#continue")
    page.wait_for_url(base + "/admin/tokens")
    assert 'ForceAuthn="true"' not in entra.requests[0]
    check_accessibility(page, "tokens")

    # Signed in longer ago than admin.reauth_seconds: creating a token sends her to Entra again.
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(sa.update(SsoSession).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    engine.dispose()
    page.fill("#token-name", "entra")
    page.click("#create-token")
    page.wait_for_selector("#continue")
    assert 'ForceAuthn="true"' in entra.requests[-1]
    page.click("#continue")
    page.wait_for_url(base + "/admin/tokens")
    assert page.query_selector("#new-token") is None  # not replayed: she submits again
    page.fill("#token-name", "entra")
    page.click("#create-token")
    page.wait_for_selector("#new-token")
    assert scim_status(base, page.inner_text("#new-token").strip()) == 200
    page.goto(base + "/admin/idp")
    assert page.inner_text("#reply-url") == base + "/saml/acs"
    check_accessibility(page, "idp")
    assert csp == [], csp
    context.close()
