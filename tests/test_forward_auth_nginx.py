"""nginx's part of the docs' configuration that only nginx needs: room for big identity headers.

nginx reads an ``auth_request`` answer's headers into one ``proxy_buffer_size``
buffer (4 KB by default). A person in 150 groups (the most Entra puts in a
token) with long names has a groups header of tens of KB: with nginx's
defaults every page is a 500 ("upstream sent too big header"), with the
buffer lines of docs/proxies/nginx.conf the app gets the whole header.
Both run here, side by side, against one ``pserve``. Everything else about
nginx (round trip, encodings, bypasses) is in test_forward_auth_proxies.py
and test_forward_auth_browser.py, for nginx and Caddy alike.
"""

from __future__ import annotations

import re
import uuid

import pytest

from conftest import free_port
from proxy_support import (
    APP_HOST,
    AUTH_HOST,
    LONG_GROUP,
    MISSING,
    NGINX,
    Echo,
    make_tls,
    start_gateway,
    start_nginx,
    stop_gateway,
    stop_proxy,
)

# One worker runs the whole module (with --dist loadgroup), so each stack starts once.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason=MISSING["nginx"]),
    pytest.mark.xdist_group("forward-auth-nginx"),
]

BUFFER_LINES = re.compile(r"^\s*proxy_(buffer_size|buffers|busy_buffers_size)\s.*\n", re.M)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, idp, idp_metadata_file):
    folder = tmp_path_factory.mktemp("nginx-buffers")
    port, defaults_port = free_port(), free_port()
    echo = Echo()
    gateway = start_gateway(
        folder / "gateway",
        base_url=f"https://{AUTH_HOST}:{port}",
        idp_metadata=idp_metadata_file,
        settings={"forward_auth.proxy": "nginx", "forward_auth.allowed_hosts": APP_HOST},
    )
    proxies = []
    try:
        tls = make_tls(folder / "tls")
        upstream = f"127.0.0.1:{gateway.port}"
        documented = start_nginx(folder / "documented", gateway=upstream, app_port=echo.port, tls=tls, port=port)
        proxies.append(documented)

        def without_buffer_lines(text: str) -> str:
            edited, count = BUFFER_LINES.subn("", text)
            assert count == 3, "docs/proxies/nginx.conf no longer sets the three buffer sizes"
            return edited

        defaults = start_nginx(
            folder / "defaults",
            gateway=upstream,
            app_port=echo.port,
            tls=tls,
            port=defaults_port,
            edit=without_buffer_lines,
        )
        proxies.append(defaults)
        user = gateway.create_user("mia@example.com", "Mia Many", email="mia@example.com")
        names = [LONG_GROUP.format(i) for i in range(150)]
        for name in names:
            gateway.create_group(name, [user["id"]], external_id=str(uuid.uuid4()))
        cookie = gateway.sign_in(idp, "mia@example.com", via=documented)
        yield documented, defaults, echo, cookie, names
    finally:
        for proxy in proxies:
            stop_proxy(proxy)
        stop_gateway(gateway)
        echo.close()


def test_the_documented_buffers_let_a_person_in_150_groups_through(setup):
    documented, _, echo, cookie, names = setup
    before = len(echo.seen)
    answer = documented.request("/", cookie=cookie)
    assert answer.status == 200, (answer.status, documented.log()[-1000:])
    groups = echo.reached(before)[0]["headers"]["X-Auth-Request-Groups"]
    assert len(groups.encode()) == 150 * 250 + 149
    assert sorted(groups.split(",")) == sorted(names)


def test_without_them_nginx_answers_500(setup):
    _, defaults, echo, cookie, _ = setup
    before = len(echo.seen)
    answer = defaults.request("/", cookie=cookie)
    assert answer.status == 500
    assert echo.reached(before) == []
    assert "upstream sent too big header" in defaults.log()
