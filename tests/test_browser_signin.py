"""End to end in a real headless Chromium: pserve with the development IdP, sign in, sign out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).parent.parent
CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def served(tmp_path, pserve):
    """``pserve development.ini`` (a copy, with its database in tmp_path) on a free port."""
    port = free_port()
    ini = tmp_path / "development.ini"
    ini.write_text((ROOT / "development.ini").read_text().replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
    server = pserve(ini, port)
    yield server.url
    output = server.log_path.read_text()
    assert "Traceback" not in output, output


@pytest.mark.browser
@pytest.mark.slow
def test_sign_in_and_out_with_the_development_idp(served):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"Chromium not found at {CHROMIUM}: `./dev test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(served + "/")
            page.click("#sign-in")
            # The development IdP's pick page, like Entra's account picker.
            page.wait_for_selector("text=Pick a test user")
            page.click('button[data-email="bob@example.com"]')
            page.wait_for_url(served + "/")
            assert page.inner_text("#display-name") == "Bob Builder"
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["gateway_session"]["httpOnly"] and cookies["gateway_session"]["sameSite"] == "Lax"
            page.click("#sign-out")
            page.wait_for_selector("#sign-in")
            assert "You are not signed in" in page.content()
            response = page.goto(served + "/whoami")
            assert response.status == 401
        finally:
            browser.close()
