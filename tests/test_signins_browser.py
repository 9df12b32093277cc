"""Sign-in traces, test sign-ins and the provisioning log in a real headless Chromium, as an admin uses them.

Two identity providers, as in tests/test_admin_browser.py: the development
IdP of development.ini, and the kit's IdP server in place of Entra (its
``people`` and ``knobs`` changed to send what a misconfigured Entra sends). axe-core runs
on every page; no script from a claim ever runs (a dialog would fail the test).

The screenshots of a test sign-in's report and of a sign-in trace go to
docs/_static/ with ``GATEWAY_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from conftest import SESSION_SECRET, free_port
from gateway.db import create_engine
from gateway.db.models import SsoSession, User
from scim_support import run_cli
from test_admin_browser import (  # noqa: F401 - fixtures
    check_accessibility,
    chromium,
    development,
    entra,
    pick,
    screenshots,
    watch_csp,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = '<script>alert("x")</script>"onmouseover="alert(1)'


def no_dialogs(page) -> list:
    """Every JavaScript dialog the page opens (a script from a claim would): must stay empty."""
    opened = []

    def seen(dialog):
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    return opened


def counts(database_url: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        found = tuple(connection.scalar(sa.select(sa.func.count()).select_from(m)) for m in (User, SsoSession))
    engine.dispose()
    return found


# ---------------------------------------------------------------- the development IdP


def test_alice_tests_sign_in_and_sends_a_test_link_with_the_development_idp(
    development, chromium, screenshots, tmp_path
):
    base = development
    database = f"sqlite:///{tmp_path}/var/gateway.sqlite"
    alice = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = alice.new_page()
    csp, dialogs = watch_csp(page), no_dialogs(page)
    page.goto(base + "/admin/test")
    pick(page, "alice@example.com")
    page.wait_for_url(base + "/admin/test")
    check_accessibility(page, "test page")
    before = counts(database)

    # A test sign-in as Bob: through the IdP and back to the report; nobody signed in as Bob.
    page.click("#start-test")
    pick(page, "bob@example.com")
    page.wait_for_url(re.compile(r".*/admin/signins/[0-9a-f-]+$"))
    assert "Passed" in page.inner_text("#verdict")
    assert "Passed" in page.inner_text("#check-signature") and "verified with certificate" in page.inner_text(
        "#check-signature"
    )
    assert "bob@example.com" in page.inner_text("#claims")
    assert "Bob Builder" in page.inner_text("#identity")
    assert page.inner_text("#decision").startswith("Create the user") or "Sign in" in page.inner_text("#decision")
    check_accessibility(page, "test report")
    page.screenshot(path=str(screenshots / "admin-test-report.png"), full_page=True)
    assert counts(database) == before
    assert page.goto(base + "/whoami").status == 200 and "alice@example.com" in page.content()

    # A hostile display name and group typed at the IdP render as text in the report.
    page.goto(base + "/admin/test")
    page.click("#start-test")
    page.wait_for_selector("text=Or type one")
    page.fill("form.filters input[name=email]", "mallory@example.com")
    page.fill("input[name=display_name]", HOSTILE)
    page.fill("input[name=groups]", HOSTILE)
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/signins/[0-9a-f-]+$"))
    assert HOSTILE in page.inner_text("#claims") and HOSTILE in page.inner_text("#identity")
    page.hover("#claims")
    page.hover("#identity")
    check_accessibility(page, "report with hostile claims")

    # A one-time test link, opened in another browser: the tester sees only "thank you".
    page.goto(base + "/admin/test")
    page.click("#create-link")
    page.wait_for_selector("#test-link")
    link = page.inner_text("#test-link").strip()
    assert page.is_visible('button[data-copy="test-link"]')
    check_accessibility(page, "test link created")
    tester = chromium.new_context().new_page()
    tester.goto(link)
    check_accessibility(tester, "test link page")
    tester.click("#start-test-link")
    pick(tester, "carol@example.com")
    tester.wait_for_selector("#thanks")
    assert "Carol" not in tester.content()
    check_accessibility(tester, "thank you page")
    assert tester.goto(base + "/whoami").status == 401
    assert tester.goto(link).status == 410  # used once

    page.goto(base + "/admin/test")
    assert "carol@example.com" in page.inner_text("#recent-tests")
    page.click("#recent-tests a >> nth=0")
    page.wait_for_selector("#checks")
    assert "admin:alice@example.com" in page.inner_text("#trace-fields")
    assert counts(database) == before
    assert dialogs == [] and csp == [], (dialogs, csp)
    alice.close()


@pytest.fixture
def gateway(tmp_path, pserve, entra):
    port = free_port()
    base = entra.gateway_url = f"http://127.0.0.1:{port}"
    metadata = entra.write_metadata(tmp_path / "idp-metadata.xml")
    ini = tmp_path / "gateway.ini"
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\n"
        f"gateway.base_url = {base}\n"
        "gateway.plugins = entra sqlstore audit\n"
        'gateway.admin_groups = "Gateway Admins"\n'
        f"sqlalchemy.url = sqlite:///{tmp_path}/gateway.sqlite\n"
        f"saml.idp_metadata = {metadata}\n"
        "provisioning.mode = scim first_login\n"
        f"session.secret = {SESSION_SECRET}\nsession.cookie_secure = false\n"
        f"[server:main]\nuse = egg:entra-identity-gateway#granian\nlisten = 127.0.0.1:{port}\nworkers = 1\n"
    )
    served = pserve(ini, port)
    yield served.url, ini
    assert "Traceback" not in served.log_path.read_text()


def scim(base: str, token: str, method: str, path: str, body=None) -> int:
    request = urllib.request.Request(
        base + "/scim/v2" + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_refusal_found_by_its_reference_a_test_and_entras_failed_scim_requests(gateway, entra, chromium, screenshots):
    base, ini = gateway
    admin = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = admin.new_page()
    csp, dialogs = watch_csp(page), no_dialogs(page)
    page.goto(base + "/admin/signins")
    page.click("#continue")
    page.wait_for_url(base + "/admin/signins")

    # Entra still has the old Identifier: a person is refused and sends the reference to the admin.
    entra.knobs = {"audience": "https://old-gateway.example.com/saml/metadata"}
    person = chromium.new_context().new_page()
    person.goto(base + "/saml/login")
    person.click("#continue")
    person.wait_for_selector("#correlation-id, #reason")
    reference = person.inner_text("#correlation-id").strip() if person.query_selector("#correlation-id") else ""
    reference = reference or person.inner_text("#page-reference").strip()
    entra.knobs = {}

    page.fill("#q", reference)
    page.press("#q", "Enter")
    page.wait_for_selector("#fix")
    assert "Wrong Identifier (Entity ID)" in page.inner_text("#fix")
    assert base + "/saml/metadata" in page.inner_text("#fix")
    assert page.inner_text("#trace-reference") == reference
    assert "old-gateway.example.com" in page.inner_text("#trace-xml")
    check_accessibility(page, "sign-in trace")
    page.screenshot(path=str(screenshots / "admin-signin-trace.png"), full_page=True)

    # A test sign-in through "Entra", answered by someone with a hostile display name and a rolled-over key.
    database = f"sqlite:///{ini.parent}/gateway.sqlite"
    before = counts(database)
    admins = entra.people
    mallory = entra.idp.claims("mallory@example.com", oid="22222222-2222-4222-8222-222222222222", groups=(HOSTILE,))
    mallory["http://schemas.microsoft.com/identity/claims/displayname"] = [HOSTILE]
    entra.people = {"mallory@example.com": mallory}
    entra.knobs = {"key": entra.idp.rollover}
    page.goto(base + "/admin/test")
    page.click("#start-test")
    page.click("#continue")
    page.wait_for_url(re.compile(r".*/admin/signins/[0-9a-f-]+$"))
    assert 'ForceAuthn="true"' in entra.requests[-1]
    assert "would be refused" in page.inner_text("#verdict")
    assert "Signing certificate rolled over" in page.inner_text("#check-signature")
    assert HOSTILE in page.inner_text("#claims")
    page.hover("#claims")
    check_accessibility(page, "failed test report")
    entra.people, entra.knobs = admins, {}
    # And one that passes, as the admin: no session, no user changed.
    page.goto(base + "/admin/test")
    page.click("#start-test")
    page.click("#continue")
    page.wait_for_url(re.compile(r".*/admin/signins/[0-9a-f-]+$"))
    assert "Passed" in page.inner_text("#verdict") and "Sign in" in page.inner_text("#decision")
    assert page.inner_text("#matched-user") == "admin@example.com"
    assert counts(database) == before

    # Entra's provisioning fails: a duplicate user and a filter it cannot parse.
    out = run_cli(ini, "token", "create", "entra").stdout
    token = next(line.strip() for line in out.splitlines() if line.strip().startswith("gws_"))
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": HOSTILE + "@example.com"}
    assert scim(base, token, "POST", "/Users", user) == 201
    assert scim(base, token, "POST", "/Users", user) == 409
    assert scim(base, token, "GET", "/Users?filter=userName%20zz%20%22x%22") == 400
    page.goto(base + "/admin/provisioning")
    assert "2" in page.inner_text("#last-day") or "failed" in page.inner_text("#last-day")
    failures = page.inner_text("#failures")
    assert "409" in failures and "uniqueness" in failures and "invalidFilter" in failures
    page.select_option("#filter-status", "errors")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*status=errors.*"))
    rows = page.inner_text("#requests")
    assert "409" in rows and "400" in rows and "201" not in rows and "entra" in rows
    check_accessibility(page, "provisioning log")
    for url in ("/admin/signins", "/admin/provisioning", "/admin/test"):
        page.goto(base + url)
        check_accessibility(page, url)
    assert dialogs == [] and csp == [], (dialogs, csp)
    admin.close()
