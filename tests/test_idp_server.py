"""The kit's stand-in IdP web server (gateway.testing.idp_server), followed over real HTTP as a browser
follows it, without a browser: its page's forms are what the gateway's ACS verifies and signs in with.

The browser tests (test_admin_browser.py, test_signins_browser.py, test_forward_auth_browser.py,
test_production.py) use the same server in Chromium.
"""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.request

import pytest

GATEWAY = "http://localhost"


def fetch(url: str) -> tuple[int, str, dict]:
    """GET ``url`` from the IdP server without following redirects: (status, body, headers)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def forms(page: str) -> dict[str, dict[str, str]]:
    """{the button's data-user: the form's action and hidden fields} of the IdP's page."""
    found = {}
    for form in re.findall(r"<form (.*?)</form>", page, re.S):
        user = html.unescape(re.search(r'data-user="([^"]*)"', form).group(1))
        fields = {
            name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
        }
        found[user] = {"action": html.unescape(re.search(r'action="([^"]*)"', form).group(1)), **fields}
    return found


@pytest.fixture
def served(gateway_idp_server, gateway_make_app):
    """The IdP server with two people, and an app that trusts it."""
    gateway_idp_server.gateway_url = GATEWAY
    gateway_idp_server.people = {"alice@example.com": None, "bob@example.com": None}
    app = gateway_make_app(**{"saml.idp_metadata": gateway_idp_server.write_metadata()})
    return gateway_idp_server, app


def test_a_person_picked_on_its_page_is_signed_in(served):
    server, app = served
    location = app.get("/saml/login", params={"next": "/whoami"}, status=303).headers["Location"]
    assert location.startswith(server.sso_url + "?SAMLRequest=")
    status, page, _ = fetch(location)
    assert status == 200 and "Test IdP: pick a person" in page
    assert 'id="continue" data-user="alice@example.com"' in page  # the first person's button
    bob = forms(page)["bob@example.com"]
    assert bob["action"] == GATEWAY + "/saml/acs"
    app.post("/saml/acs", {k: v for k, v in bob.items() if k != "action"}, status=303)
    assert app.get("/whoami").json["userName"] == "bob@example.com"
    assert len(server.requests) == 1 and "AuthnRequest" in server.requests[0]


def test_knobs_change_what_the_next_answer_says(served):
    server, app = served
    server.knobs = {"key": server.idp.attacker}
    _, page, _ = fetch(app.get("/saml/login", status=303).headers["Location"])
    alice = forms(page)["alice@example.com"]
    response = app.post("/saml/acs", {k: v for k, v in alice.items() if k != "action"}, status=403)
    assert response.headers["X-Reason"] == "signature_invalid"
    app.get("/whoami", status=401)


def test_single_logout_comes_back_with_a_signed_answer(served):
    server, app = served
    _, page, _ = fetch(app.get("/saml/login", status=303).headers["Location"])
    alice = forms(page)["alice@example.com"]
    app.post("/saml/acs", {k: v for k, v in alice.items() if k != "action"}, status=303)
    token = re.search(r'name="csrf_token" value="([^"]+)"', app.get("/").text).group(1)
    to_idp = app.post("/logout", {"csrf_token": token}, status=303).headers["Location"]
    assert to_idp.startswith(server.slo_url + "?SAMLRequest=")
    status, _, headers = fetch(to_idp)
    assert status == 303 and headers["Location"].startswith(GATEWAY + "/saml/slo?SAMLResponse=")
    assert "Signature=" in headers["Location"]
    app.get(headers["Location"][len(GATEWAY) :], status=303)
    app.get("/whoami", status=401)


def test_anything_else_is_not_found(served):
    server, _ = served
    assert fetch(server.url + "/saml2")[0] == 404
    assert fetch(server.url + "/favicon.ico")[0] == 404
