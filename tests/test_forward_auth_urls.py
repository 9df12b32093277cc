"""The strict URL check (gateway/forward_auth/urls.py) against a browser's reading of the same URLs.

``ada_url`` is Ada, the WHATWG URL parser that Node.js uses: what it says a
URL's host is, is what Chromium and Firefox navigate to. Every URL the
gateway accepts must have the same host and port in both readings.
"""

import itertools

import pytest

from gateway.forward_auth.urls import MAX_URL, ReturnTargets, canonical_host, local_path, normal_path, parse_url

ada_url = pytest.importorskip("ada_url", reason="ada-url is a test dependency (pyproject.toml [test])")

BASE = "https://auth.example.com"
TARGETS = ReturnTargets(BASE, ("*.example.com", "partner.example.net"))

REFUSED = [
    "https://evil.example\\@app.example.com/",
    "https://app.example.com@evil.example/",
    "https://user:pass@app.example.com/",
    "//evil.example",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    "https:\\\\evil.example",
    "https://evil.example%2F@app.example.com/",
    "https://evil.example%2f.app.example.com/",
    "https://app.example.com%2F@evil.example/",
    "https://ex%41mple.example.com/",
    "https://app.example.com\t/",
    "https://app.exa\tmple.com/",
    "https://app.example.com/\npath",
    "\thttps://app.example.com/",
    "https://app.example.com/ x",
    "https://app.example.com/\x00",
    "https://app.example.com/\x7f",
    "https://app.example.com/ü",
    "https://äpp.example.com/",
    "javascript:alert(1)",
    "javascript://app.example.com/%0aalert(1)",
    "data:text/html,x",
    "ftp://app.example.com/",
    "https://app.example.com:/",
    "https://app.example.com:0/",
    "https://app.example.com:65536/",
    "https://app.example.com:+443/",
    "https://app..example.com/",
    "https://.app.example.com/",
    "https://-app.example.com/",
    "https://0x7f.1/",
    "https://2130706433/",
    "https://127.1/",
    "https://010.0.0.1/",
    "https://app.example.com.0x10/",
    "https://[::1%25eth0]/",
    "https://[::1/",
    "https://[example.com]/",
    "https://evil.example/",
    "https://example.com.evil.net/",
    "https://evil-example.com/",
    "https://example.com/",  # *.example.com covers subdomains only
    "/" + "x" * MAX_URL,
]

ACCEPTED = [
    ("/", "/"),
    ("/deep/page?x=1#top", "/deep/page?x=1#top"),
    ("https://auth.example.com/", "https://auth.example.com/"),
    ("https://auth.example.com:8443/x", "https://auth.example.com:8443/x"),
    ("https://app.example.com/deep/page?x=1&y=%C3%A9", "https://app.example.com/deep/page?x=1&y=%C3%A9"),
    ("http://app.example.com:8080/", "http://app.example.com:8080/"),
    ("HTTPS://APP.Example.COM./Case", "HTTPS://APP.Example.COM./Case"),
    ("https://a.b.example.com?q", "https://a.b.example.com?q"),
    ("https://partner.example.net/x/../y", "https://partner.example.net/x/../y"),
]


@pytest.mark.parametrize("value", REFUSED)
def test_refused_targets(value):
    assert TARGETS.check(value) is None


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_accepted_targets(value, expected):
    assert TARGETS.check(value) == expected


DEFAULT_PORTS = {"http:": 80, "https:": 443}


def browser_host_and_port(url: str, base: str | None = None) -> tuple[str, int | None] | None:
    """Host and port as a browser reads ``url`` (the port, when it is the scheme's default, too)."""
    try:
        parsed = ada_url.URL(url, base) if base else ada_url.URL(url)
    except ValueError:
        return None
    host = parsed.hostname.rstrip(".") if not parsed.hostname.startswith("[") else parsed.hostname
    return host, int(parsed.port) if parsed.port else DEFAULT_PORTS.get(parsed.protocol)


def _corpus():
    schemes = ["https", "HTTPS", "http", "ftp", "javascript", "https:", ""]
    separators = ["://", ":", ":/", ":///", ":\\\\", "://\\", "//", ":\t//"]
    userinfo = ["", "u@", "u:p@", "evil.example\\@", "evil.example%2F@", "@", "evil.example@"]
    hosts = [
        "app.example.com",
        "APP.example.com.",
        "app.example.com..",
        "evil.example",
        "app.example.com%2F",
        "0x7f.1",
        "127.0.0.1",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[0:0::1]",
        "ex%41mple.com",
        "app.exa\tmple.com",
        "xn--bcher-kva.example.com",
        "app.example.com\\.evil.example",
        "app_1.example.com",
        "1.2.3.4.example.com",
        "app.example.com.9",
        "",
    ]
    ports = ["", ":", ":443", ":80", ":8443", ":0", ":99999", ":08443", ":+1", ":8443@evil.example"]
    rests = ["", "/", "/x?y=1", "\\x", "#@evil.example", "?@evil.example", "/\\evil.example", "/%2e%2e/", "\n/"]
    for parts in itertools.product(schemes, separators, userinfo, hosts, ports, rests):
        yield "".join(parts)


def test_every_accepted_url_is_read_alike_by_a_browser():
    accepted = 0
    for url in _corpus():
        parsed = parse_url(url)
        if parsed is None:
            continue
        accepted += 1
        port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme + ":"]
        assert browser_host_and_port(url) == (parsed.host, port), url
    assert accepted > 500  # the corpus does exercise acceptance


def test_every_accepted_local_path_stays_on_the_site():
    pieces = ["/", "//", "\\", "/\\", "\t", "\n", "evil.example", "@", "%2F", "..", ".", ":", "?", "#", " "]
    checked = 0
    for combo in itertools.product(pieces, repeat=4):
        value = "".join(combo)
        if local_path(value) is None:
            continue
        checked += 1
        assert browser_host_and_port(value, BASE + "/a/b") == ("auth.example.com", 443), value
        assert browser_host_and_port(BASE + value) == ("auth.example.com", 443), value
    assert checked > 100


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("app.example.com", "app.example.com"),
        ("App.Example.com.", "app.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::FFFF:127.0.0.1]", "[::ffff:7f00:1]"),
        ("app.example.com..", None),
        ("0x7f.1", None),
        ("4294967295", None),
        ("a" * 64 + ".example.com", None),
        ("app.example.com:443", None),
    ],
)
def test_canonical_host(raw, expected):
    assert canonical_host(raw) == expected


NORMAL = [
    ("/", "/"),
    ("/reports/q3", "/reports/q3"),
    ("/REPORTS/Q3", "/reports/q3"),
    ("/%72eports/q3", "/reports/q3"),
    ("/%52EPORTS/q3", "/reports/q3"),
    ("/reports;jsessionid=abc/q3", "/reports/q3"),
    ("/reports/q3;v=1", "/reports/q3"),
    ("/reports/", "/reports/"),
    ("/%E6%9D%8E%E9%9B%B7", "/李雷"),
    ("/a%20b", "/a b"),
    ("/reports%3Fx", "/reports?x"),
]

NOT_NORMAL = [
    "",
    "reports",
    "//reports",
    "/reports//q3",
    "/x/../reports",
    "/./reports",
    "/reports/./q3",
    "/reports/..",
    "/reports/.",
    "/..;/reports",
    "/x/..;/reports",
    "/.;x/reports",
    "/;x/reports",
    "/%2freports",
    "/reports%2Fq3",
    "/%2E%2E/reports",
    "/.%2e/reports",
    "/%2e/reports",
    "/a%2Etxt",
    "/%5Creports",
    "/\\reports",
    "/%25%37%32eports",
    "/%3Breports",
    "/%zz",
    "/%",
    "/%4",
    "/%C3",
    "/%C3%28",
    "/%00",
    "/%0a",
    "/%7F",
    "/ reports",
    "/reports\t",
    "/ü",
]


@pytest.mark.parametrize(("raw", "expected"), NORMAL)
def test_normal_path(raw, expected):
    assert normal_path(raw) == expected


@pytest.mark.parametrize("raw", NOT_NORMAL)
def test_paths_without_one_normal_form_are_refused(raw):
    assert normal_path(raw) is None


def test_case_sensitive_paths_keep_their_case():
    assert normal_path("/%52EPORTS/Q3", case_sensitive=True) == "/REPORTS/Q3"
