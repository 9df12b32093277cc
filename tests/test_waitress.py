"""The gateway served by waitress (``use = egg:waitress#main``), end to end.

The ini supports both servers; Granian is the default and the other live
tests run on it. Here pserve serves the app with waitress and a person signs
in with a signed response, Entra's SCIM creates a user, and /auth answers
for the session, all over HTTP.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
import zlib
from pathlib import Path

import pytest
import requests

from conftest import free_port
from gateway.testing.saml import stable_oid
from saml_support import b64
from scim_support import SCIM_JSON, LiveGateway, write_ini

pytestmark = [pytest.mark.slow]

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def serve(pserve, tmp_path: Path, database_url: str, server: str, idp_metadata: str) -> LiveGateway:
    """pserve on ``server`` (``granian`` or ``waitress``), trusting the test IdP.

    ``pserve``: conftest's fixture, or :func:`patient_pserve`'s.
    """
    port = free_port()
    ini = write_ini(
        tmp_path / f"{server}-{port}.ini",
        database_url,
        port,
        **{
            "gateway.plugins": "entra sqlstore",
            "saml.idp_metadata": idp_metadata,
        },
    )
    text = ini.read_text().replace("saml.idp_profile = devidp\n", "")
    if server == "waitress":
        text = text.replace("use = egg:entra-identity-gateway#granian", "use = egg:waitress#main")
    else:
        text = text.replace(f"listen = 127.0.0.1:{port}\n", f"listen = 127.0.0.1:{port}\nworkers = 1\n")
    ini.write_text(text)
    served = pserve(ini, port)
    return LiveGateway(ini, port, served.process)


@pytest.fixture
def patient_pserve(tmp_path):
    """conftest's ``pserve``, allowing a loaded machine two minutes to start the server."""
    import subprocess

    from conftest import BIN, Served, server_environment, stop, wait_for_http

    started = []

    def start(ini: Path, port: int) -> Served:
        subprocess.run([str(BIN / "gateway"), str(ini), "migrate"], check=True, capture_output=True, timeout=120)
        log_path = ini.with_suffix(".log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(BIN / "pserve"), str(ini)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ini.parent,
                env=server_environment(),
            )
        served = Served(f"http://127.0.0.1:{port}", process, log_path)
        started.append(served)
        wait_for_http(served.url + "/healthz", process, log_path, timeout=120)
        return served

    yield start
    for served in started:
        stop(served.process)


def sign_in(gateway: LiveGateway, idp, name: str) -> requests.Session:
    """A browser's SP-initiated sign-in over HTTP: the AuthnRequest, then a response the test IdP signs."""
    browser = requests.Session()
    login = browser.get(gateway.url + "/saml/login", params={"next": "/whoami"}, allow_redirects=False, timeout=30)
    assert login.status_code == 303, login.text
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(login.headers["Location"]).query)
    request_xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    request_id = re.search(r' ID="([^"]+)"', request_xml).group(1)
    acs = gateway.url + "/saml/acs"
    xml = idp.response(
        request_id,
        name_id=name,
        attributes=idp.claims(name, oid=stable_oid(name)),
        audience=gateway.url + "/saml/metadata",
        recipient=acs,
        destination=acs,
    )
    answer = browser.post(acs, data={"SAMLResponse": b64(xml)}, allow_redirects=False, timeout=30)
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"].endswith("/whoami")
    return browser


def test_waitress_serves_a_signed_sign_in_a_scim_create_and_forward_auth(
    patient_pserve, tmp_path, sqlite_url, idp, idp_metadata_file
):
    gateway = serve(patient_pserve, tmp_path, sqlite_url, "waitress", idp_metadata_file)
    assert requests.get(gateway.url + "/healthz", timeout=30).headers["Server"] == "waitress"
    token = gateway.token()

    created = requests.post(
        gateway.scim_url + "/Users",
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON},
        json={
            "schemas": [USER],
            "userName": "émilie@example.com",
            "externalId": "e-1",
            "emails": [{"value": "émilie@example.com", "type": "work", "primary": True}],
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["Server"] == "waitress" and created.headers["X-Request-Id"]
    found = requests.get(
        gateway.scim_url + "/Users",
        params={"filter": 'userName eq "ÉMILIE@example.com"'},
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert found.json()["totalResults"] == 1

    browser = sign_in(gateway, idp, "émilie@example.com")
    who = browser.get(gateway.url + "/whoami", timeout=30).json()
    assert who["userName"] == "émilie@example.com" and who["id"] == created.json()["id"]

    allowed = browser.get(gateway.url + "/auth", allow_redirects=False, timeout=30)
    assert allowed.status_code == 200
    # Identity headers are UTF-8 bytes on the wire; requests reads them as Latin-1.
    assert allowed.headers["X-Auth-Request-User"].encode("latin-1").decode() == "émilie@example.com"
    anonymous = requests.get(gateway.url + "/auth", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 401
