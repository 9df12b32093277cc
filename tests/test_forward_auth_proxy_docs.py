"""The docs show the proxy files the tests run, and each file carries every identity header.

docs/forward-auth.md includes docs/proxies/* (MyST ``literalinclude``)
instead of copies, so what a deployer reads is what
test_forward_auth_proxies.py and test_forward_auth_browser.py run with real
nginx and Caddy. Traefik is not packaged for Debian and is not run: its file
is checked here, by reading it, for the same properties the running proxies
are tested for.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway.settings import ForwardAuthSettings

DOCS = Path(__file__).parent.parent / "docs"
PROXIES = DOCS / "proxies"
FILES = ["nginx.conf", "Caddyfile", "traefik.yml"]

#: The identity headers the gateway sends by default (forward_auth.header_*).
IDENTITY_HEADERS = [
    f.default
    for f in dataclasses.fields(ForwardAuthSettings)
    if f.name.startswith("header_") and f.name != "header_encoding"
]


def test_identity_headers_are_the_five_documented():
    assert sorted(IDENTITY_HEADERS) == sorted(
        [
            "X-Auth-Request-User-Id",
            "X-Auth-Request-User",
            "X-Auth-Request-Email",
            "X-Auth-Request-Name",
            "X-Auth-Request-Groups",
        ]
    )


def test_the_docs_include_the_tested_files_not_copies():
    text = (DOCS / "forward-auth.md").read_text()
    included = re.findall(r"^```\{literalinclude\} proxies/(\S+)$", text, re.M)
    assert sorted(included) == sorted(FILES)
    assert sorted(p.name for p in PROXIES.iterdir()) == sorted(FILES)
    # No pasted configuration that could drift from the files.
    assert not re.search(r"^```(nginx|caddyfile|yaml)\s*$", text, re.M)


def test_nginx_sets_every_identity_header_and_the_original_url():
    text = (PROXIES / "nginx.conf").read_text()
    for header in IDENTITY_HEADERS:
        variable = "$upstream_http_" + header.lower().replace("-", "_")
        found = re.search(rf"auth_request_set\s+(\$\w+)\s+{re.escape(variable)};", text)
        assert found, f"nginx.conf does not read {header} from the /auth answer"
        assert re.search(rf"proxy_set_header\s+{header}\s+{re.escape(found.group(1))};", text), header
    assert "proxy_set_header X-Original-URL $scheme://$http_host$request_uri;" in text
    for header in ("X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Proto", "X-Forwarded-Method"):
        assert f'proxy_set_header {header} "";' in text
    size = int(re.search(r"proxy_buffer_size\s+(\d+)k;", text).group(1))
    assert size * 1024 >= 150 * 257 + 2048  # 150 groups of 256 characters, and the other headers


def test_caddy_drops_the_browsers_headers_then_copies_every_identity_header():
    text = (PROXIES / "Caddyfile").read_text()
    route = text[text.index("route {") :]
    assert route.index("request_header -X-Auth-Request-*") < route.index("forward_auth ") < route.index("reverse_proxy")
    copied = re.search(r"^\s*copy_headers (.+)$", text, re.M).group(1).split()
    assert sorted(copied) == sorted(IDENTITY_HEADERS)
    assert "header_up -X-Original-URL" in text


def test_traefik_passes_only_the_cookie_and_copies_every_identity_header():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((PROXIES / "traefik.yml").read_text())
    forward = config["http"]["middlewares"]["gateway"]["forwardAuth"]
    assert forward["address"].endswith("/auth?rd=")
    assert forward["trustForwardHeader"] is False
    assert forward["authRequestHeaders"] == ["Cookie"]
    assert sorted(forward["authResponseHeaders"]) == sorted(IDENTITY_HEADERS)
    routers = config["http"]["routers"]
    assert routers["app"]["middlewares"] == ["gateway"]
    assert "middlewares" not in routers["gateway"]
