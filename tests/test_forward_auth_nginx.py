"""A real nginx with ``auth_request`` in front of an echo app, asking a running ``pserve``.

This is the nginx configuration the README shows, run for real: signed out,
the browser is sent to sign in; signed in through a real signed SAML
response, the upstream sees the identity headers; outside the allowed group,
403.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.parse
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import SESSION_SECRET, free_port, stop, wait_for_http
from gateway.db import create_engine
from gateway.db.models import Group, GroupMember, User
from saml_support import authn_request_id, b64

ROOT = Path(__file__).parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed and ./dev test could not install it"),
]

# The README's example, with the ports and paths filled in by the test.
NGINX_CONF = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    server {{
        listen 127.0.0.1:{nginx_port};

        location = /_gateway_auth {{
            internal;
            proxy_pass http://127.0.0.1:{gateway_port}/auth?rd=;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}

        location / {{
            auth_request /_gateway_auth;
            auth_request_set $gw_user   $upstream_http_x_auth_request_user;
            auth_request_set $gw_email  $upstream_http_x_auth_request_email;
            auth_request_set $gw_name   $upstream_http_x_auth_request_name;
            auth_request_set $gw_groups $upstream_http_x_auth_request_groups;
            auth_request_set $gw_signin $upstream_http_location;
            proxy_set_header X-Auth-Request-User   $gw_user;
            proxy_set_header X-Auth-Request-Email  $gw_email;
            proxy_set_header X-Auth-Request-Name   $gw_name;
            proxy_set_header X-Auth-Request-Groups $gw_groups;
            error_page 401 = @signin;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}

        location @signin {{
            return 302 $gw_signin;
        }}
    }}
}}
"""


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def echo_app(environ, start_response):
    headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps({"path": environ["PATH_INFO"], "headers": headers}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def stack(tmp_path, idp, pserve):
    """pserve (gateway) + echo upstream + nginx, each on a free loopback port."""
    gateway_port, upstream_port, nginx_port = free_port(), free_port(), free_port()
    database = f"sqlite:///{tmp_path}/gateway.sqlite"
    ini = tmp_path / "gateway.ini"
    ini.write_text(
        "\n".join(
            [
                "[app:main]",
                "use = egg:entra-identity-gateway",
                "gateway.base_url = http://localhost",
                "gateway.plugins = entra",
                f"sqlalchemy.url = {database}",
                f"saml.idp_metadata = {idp.write_metadata('nginx-idp.xml')}",
                f"session.secret = {SESSION_SECRET}",
                "session.cookie_secure = false",
                "forward_auth.proxy = nginx",
                "forward_auth.allowed_hosts = 127.0.0.1",
                "forward_auth.rules = * / Staff",
                "[server:main]",
                "use = egg:entra-identity-gateway#granian",
                f"listen = 127.0.0.1:{gateway_port}",
            ]
        )
        + "\n"
    )
    pserve(ini, gateway_port)

    upstream = make_server("127.0.0.1", upstream_port, echo_app, handler_class=_Quiet)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user=user, tmp=tmp_path, nginx_port=nginx_port, gateway_port=gateway_port, upstream_port=upstream_port
        )
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "nginx-error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{nginx_port}/", nginx)
        yield {
            "gateway": f"http://127.0.0.1:{gateway_port}",
            "app": f"http://127.0.0.1:{nginx_port}",
            "database": database,
        }
    finally:
        stop(nginx)
        upstream.shutdown()


def sign_in_live(gateway: str, idp, name: str) -> str:
    """SP-initiated sign-in against the live gateway; returns the session cookie value."""
    browser = requests.Session()
    login = browser.get(f"{gateway}/saml/login", params={"next": "/"}, allow_redirects=False)
    assert login.status_code in (302, 303)
    request_id = authn_request_id(login.headers["Location"])
    acs = browser.post(
        f"{gateway}/saml/acs",
        data={"SAMLResponse": b64(idp.response(request_id, name_id=name, attributes=idp.claims(name, oid=str(uuid.uuid4()))))},
        allow_redirects=False,
    )
    assert acs.status_code in (302, 303), acs.text
    return acs.cookies["gateway_session"]


def put_in_group(database: str, user_name: str, group: str) -> None:
    engine = create_engine(database)
    with Session(engine) as session, session.begin():
        user = session.scalars(sa.select(User).where(User.user_name_key == user_name)).one()
        row = Group(display_name=group, display_name_key=group.lower())
        session.add(row)
        session.flush()
        session.add(GroupMember(group_id=row.id, user_id=user.id))
    engine.dispose()


def test_nginx_auth_request_end_to_end(stack, idp):
    app = stack["app"]

    # Signed out: nginx sends the browser to the gateway's sign-in, with the page to come back to.
    response = requests.get(f"{app}/reports?q=1", allow_redirects=False)
    assert response.status_code == 302
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert location.path == "/saml/login"
    assert urllib.parse.parse_qs(location.query)["next"] == [f"{app}/reports?q=1"]

    # Signed in, in the allowed group: the upstream sees who it is.
    cookie = sign_in_live(stack["gateway"], idp, "alice@example.com")
    put_in_group(stack["database"], "alice@example.com", "Staff")
    response = requests.get(f"{app}/reports", cookies={"gateway_session": cookie}, allow_redirects=False)
    assert response.status_code == 200, response.text
    seen = response.json()["headers"]
    assert seen["X-Auth-Request-User"] == "alice@example.com"
    assert seen["X-Auth-Request-Email"] == "alice@example.com"
    assert seen["X-Auth-Request-Name"] == "Alice Example"
    assert seen["X-Auth-Request-Groups"] == "Staff"

    # Signed in but outside the allowed group: 403, and the upstream is never asked.
    cookie = sign_in_live(stack["gateway"], idp, "bob@example.com")
    response = requests.get(f"{app}/reports", cookies={"gateway_session": cookie}, allow_redirects=False)
    assert response.status_code == 403

    # A forged identity header from the browser never reaches the upstream as truth.
    response = requests.get(
        f"{app}/", cookies={"gateway_session": "not-a-session"}, headers={"X-Auth-Request-User": "root"},
        allow_redirects=False,
    )
    assert response.status_code == 302
