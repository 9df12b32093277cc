"""Malformed and hostile input is refused (400) in one place each, never a 500;
a database that cannot be reached is a 503 with Retry-After (gateway.guard).
On SQLite and PostgreSQL where storage is involved."""

from __future__ import annotations

import json

import pytest
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import jsoncodec
from gateway.saml.errors import SamlRejection
from gateway.saml.xmlguard import safe_parse
from scim_support import PATCH_OP, SCIM

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def scim_error(response, status, scim_type=None):
    assert response.content_type == "application/scim+json"
    body = response.json
    assert body["schemas"] == [ERROR] and body["status"] == str(status), body
    assert body.get("scimType") == scim_type, body
    assert response.headers["X-Request-Id"]
    return body


# ---------------------------------------------------------------- bytes that are not UTF-8, and NUL


def test_undecodable_path_and_query_are_scim_400s(scim):
    for url in (
        f"{SCIM}/Users/%ff%fe",
        f"{SCIM}/Users?filter=userName%20eq%20%22%ff%22",
        f"{SCIM}/Users?startIndex=%c3",
    ):
        scim_error(scim.app.get(url, headers=scim.headers(), status=400), 400, "invalidSyntax")
    scim_error(
        scim.app.get(f"{SCIM}/Users?filter=userName%20eq%20%22a%00%22", headers=scim.headers(), status=400),
        400,
        "invalidSyntax",
    )


def test_undecodable_path_query_and_form_elsewhere_are_plain_400_pages(app):
    for url in ("/whoami?next=%ff", "/%ff", "/saml/login?RelayState=%00"):
        response = app.get(url, status=400)
        assert response.content_type == "text/plain" and "Reference: " in response.text
        assert response.headers["X-Request-Id"] in response.text
    response = app.post(
        "/saml/acs", b"SAMLResponse=%ff%ff", content_type="application/x-www-form-urlencoded", status=400
    )
    assert "not valid UTF-8" in response.text
    body = "SAMLResponse=abc".encode("utf-16")
    response = app.post("/saml/acs", body, content_type="application/x-www-form-urlencoded; charset=utf-16", status=400)
    assert "UTF-8" in response.text


def test_a_utf8_form_still_reaches_the_view_whole(app):
    # The guard reads the form to check it and must put it back: the view sees the same fields.
    response = app.post("/saml/acs", {"SAMLResponse": "bm90IHhtbA==", "RelayState": "/é"}, status=400)
    assert response.content_type == "text/html"  # the ACS's own refusal page, not the guard's


def test_nul_in_any_scim_string_is_refused_the_same_on_both_databases(scim, database_url):
    for body in (
        {"schemas": [USER], "userName": "a\u0000b"},
        {"schemas": [USER], "userName": "ok", "name": {"givenName": "x\u0000"}},
        {"schemas": [USER], "userName": "ok", "emails": [{"value": "a@b", "type": "wo\u0000rk"}]},
    ):
        scim_error(scim.post("/Users", body, status=400), 400, "invalidValue")
    user = scim.create_user("nul@example.com")
    patch = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "\u0000"}]}
    scim_error(scim.patch(f"/Users/{user['id']}", patch, status=400), 400, "invalidValue")
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": 'userName eq "\u0000"'}
    scim_error(scim.post("/Users/.search", search, status=400), 400, "invalidValue")
    # A backslash followed by u0000 in the text is no NUL: stored and read back.
    scim.create_user("back\\u0000slash@example.com")


# ---------------------------------------------------------------- numbers and nesting


def test_integers_beyond_64_bits_are_invalid_value(scim, database_url):
    for name in ("startIndex", "count"):
        for value in ("1" + "0" * 30, "-" + "9" * 25, str(2**63)):
            scim_error(scim.get("/Users", status=400, **{name: value}), 400, "invalidValue")
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "startIndex": 1e30}
    scim_error(scim.post("/Users/.search", search, status=400), 400, "invalidValue")
    assert scim.get("/Users", startIndex=str(2**63 - 1)).json["Resources"] == []


def test_deep_nesting_is_refused_before_anything_walks_it(scim):
    user = scim.create_user("deep@example.com")
    for depth in (100, 1000, 5000):
        value = "[" * depth + '"x"' + "]" * depth
        body = '{"schemas":["%s"],"Operations":[{"op":"replace","path":"displayName","value":%s}]}' % (PATCH_OP, value)
        scim_error(scim.patch(f"/Users/{user['id']}", body, status=400), 400, "invalidSyntax")
    with pytest.raises(ValueError, match="nested deeper"):
        jsoncodec.loads("{" * 40 + '"a":[' * 30 + "1" + "]" * 30 + "}" * 40)
    # Brackets inside strings are text, not nesting; a wide shallow value is fine.
    assert jsoncodec.loads(json.dumps({"a": "[" * 500, "b": [[1]] * 500}))["a"] == "[" * 500


# ---------------------------------------------------------------- X-Request-Id on every SCIM answer


def test_every_scim_answer_carries_x_request_id(scim):
    responses = [
        scim.app.get(f"{SCIM}/Users", status=401),
        scim.app.get(f"{SCIM}/Users", headers={"Authorization": "Bearer nope"}, status=401),
        scim.get("/Users/does-not-exist", status=404),
        scim.app.get(f"{SCIM}/NoSuchThing", headers=scim.headers(), status=404),
        scim.app.put(f"{SCIM}/Users", headers=scim.headers(), status=405),
        scim.get("/Users"),
    ]
    for response in responses:
        assert response.headers["X-Request-Id"], response
    supplied = scim.app.get(f"{SCIM}/Users", headers={"X-Request-Id": "client-chosen-id-1"}, status=401)
    assert supplied.headers["X-Request-Id"] == "client-chosen-id-1"


# ---------------------------------------------------------------- XML encodings


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0" encoding="UTF-7"?><a/>',
        b"<?xml version='1.0' encoding='iso-8859-1'?><a/>",
        '<?xml version="1.0" encoding="UTF-32"?><a/>'.encode("utf-32"),
        '<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"),
        "<a/>".encode("utf-16-be"),
    ],
)
def test_xml_in_any_encoding_but_utf8_is_malformed(data):
    with pytest.raises(SamlRejection) as refused:
        safe_parse(data)
    assert refused.value.code == "malformed"


def test_utf8_xml_with_or_without_declaration_or_bom_parses():
    for data in (b"<a/>", b'<?xml version="1.0" encoding="utf-8"?><a/>', b"\xef\xbb\xbf<a/>"):
        assert safe_parse(data).tag == "a"


# ---------------------------------------------------------------- a database that cannot be reached


def _gone(*_args, **_kwargs):
    raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_database_unavailable_is_503_with_retry_after_on_every_kind_of_route(scim, monkeypatch):
    import gateway.sessions

    registry = scim.app.app.registry
    monkeypatch.setattr(registry.scim_tokens, "verify", _gone)
    response = scim.get("/Users", status=503)
    scim_error(response, 503)
    assert response.headers["Retry-After"] == "5"

    monkeypatch.setattr(gateway.sessions, "_load", _gone)
    scim.app.set_cookie(registry.gateway_settings.session.cookie_name, "a" * 43)
    page = scim.app.get("/whoami", status=503)
    assert page.content_type == "text/html" and "Temporarily unavailable" in page.text
    assert page.headers["X-Request-Id"] in page.text and page.headers["Retry-After"] == "5"
    assert page.headers["Content-Security-Policy"]
    auth = scim.app.get("/auth", status=503)
    assert auth.body == b"" and auth.headers["Retry-After"] == "5"


def test_other_errors_are_not_mistaken_for_an_outage(scim, monkeypatch):
    def broken(*_args, **_kwargs):
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate"))

    monkeypatch.setattr(scim.app.app.registry.scim_tokens, "verify", broken)
    scim_error(scim.get("/Users", status=500), 500)


# ---------------------------------------------------------------- properties: no input makes a 500

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_json_leaf = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=12)
json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
filter_words = st.sampled_from(
    [
        "userName",
        "eq",
        "ne",
        "co",
        "sw",
        "pr",
        "gt",
        "and",
        "or",
        "not",
        "(",
        ")",
        "[",
        "]",
        '"x"',
        '"\\"',
        "emails",
        'emails[type eq "work"]',
        "name.givenName",
        "meta.lastModified",
        '"2020-01-01T00:00:00Z"',
        "true",
        "null",
        "1e400",
        "99999999999999999999999",
        "displayName",
        "members.value",
        " ",
        ".",
        '"é"',
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
    ]
)


def _no_500(response):
    assert response.status_int < 500, response.text
    if response.status_int >= 400:
        assert response.json["schemas"] == [ERROR]


@FUZZ
@given(words=st.lists(filter_words, max_size=10), tail=st.text(max_size=8))
def test_any_filter_is_answered_without_500(scim, database_url, words, tail):
    text = " ".join(words) + tail
    for path in ("/Users", "/Groups"):
        _no_500(scim.app.get(f"{SCIM}{path}", params={"filter": text}, headers=scim.headers(), status="*"))


@FUZZ
@given(
    operations=st.lists(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "replace", "remove", "Replace", "bogus"])},
            optional={
                "path": st.sampled_from(
                    [
                        "displayName",
                        "userName",
                        "active",
                        "emails",
                        'emails[type eq "work"].value',
                        "name.givenName",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                        "nickName",
                        "x[",
                        "",
                    ]
                ),
                "value": json_values,
            },
        ),
        max_size=4,
    )
)
def test_any_patch_body_is_answered_without_500(scim, database_url, operations):
    user = scim.create_user("patched@example.com") if not hasattr(scim, "fuzz_user") else scim.fuzz_user
    scim.fuzz_user = user
    response = scim.patch(f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": operations}, status="*")
    _no_500(response)


@FUZZ
@given(
    body=json_values
    | st.dictionaries(
        st.sampled_from(["schemas", "userName", "displayName", "emails", "active", "name", "externalId"]), json_values
    )
)
def test_any_create_body_is_answered_without_500(scim, database_url, body):
    for path in ("/Users", "/Groups"):
        _no_500(scim.post(path, json.dumps(body), status="*"))


# ---------------------------------------------------------------- schema-strict responses


@pytest.mark.parametrize("element", ["Status", "Issuer"])
def test_a_response_with_a_duplicated_status_or_issuer_is_malformed_and_signs_nobody_in(saml_app, idp, element):
    import re

    from saml_support import post_response, start_login

    xml = idp.response(start_login(saml_app))
    # The Response's own child (the assertion is signed; the Response around it is not).
    found = re.search(rf"<(\w+:)?{element}\b.*?</(\w+:)?{element}>", xml.split("Assertion", 1)[0], re.S)
    assert found, xml[:500]
    doubled = xml.replace(found.group(0), found.group(0) * 2, 1)
    response = post_response(saml_app, doubled, status=400)
    assert response.headers["X-Reason"] == "malformed"
    saml_app.get("/whoami", status=401)


# ---------------------------------------------------------------- case-insensitive means Python's str.lower(), on both databases

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

#: userName, displayName, email, family name, title, department: accented Latin,
#: Polish, Greek (with final sigma), German sharp s; stored in capitals or mixed case.
UNICODE_PEOPLE = [
    ("ÉMILIE.DURAND@exemple.fr", "Émilie DURAND", "ÉMILIE@EXEMPLE.FR", "DURAND-LÉVÊQUE", "INGÉNIEURE", "Économie"),
    ("Łukasz.Żółć@przykład.pl", "ŁUKASZ ŻÓŁĆ", "Łukasz@PRZYKŁAD.PL", "ŻÓŁĆ", "KIEROWNIK ŁĄCZNOŚCI", "ŁÓDŹ"),
    ("ΟΔΥΣΣΕΥΣ@example.gr", "ΟΔΥΣΣΕΥΣ ΛΑΕΡΤΙΑΔΗΣ", "ΣΟΦΙΑ@EXAMPLE.GR", "ΠΑΠΑΔΟΠΟΥΛΟΣ", "ΜΗΧΑΝΙΚΟΣ", "ΤΜΗΜΑ ΣΥΣΤΗΜΑΤΩΝ"),
    ("STRAßE@example.de", "Hauptstraße", "straße@EXAMPLE.DE", "WEIß", "Straßenbau", "STRAßENBAU"),
]
UNICODE_ATTRIBUTES = ("userName", "displayName", "emails.value", "name.familyName", "title", f"{ENTERPRISE}:department")


def _attribute(user: dict, path: str) -> str:
    if path == "emails.value":
        return user["emails"][0]["value"]
    if path == "name.familyName":
        return user["name"]["familyName"]
    if path.startswith(ENTERPRISE):
        return user[ENTERPRISE]["department"]
    return user[path]


def _shouted(text: str) -> str:
    """Upper case where that maps one character to one ("ß" stays: its capital is "SS")."""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in text)


def _python_match(op: str, stored: str, wanted: str) -> bool:
    stored, wanted = stored.lower(), wanted.lower()
    return {
        "eq": stored == wanted,
        "sw": stored.startswith(wanted),
        "co": wanted in stored,
        "ew": stored.endswith(wanted),
    }[op]


def test_non_ascii_values_are_found_in_any_case_as_python_lowercases_on_both_databases(scim, database_url):
    users = []
    for user_name, display, email, family, title, department in UNICODE_PEOPLE:
        users.append(
            scim.create_user(
                user_name,
                displayName=display,
                emails=[{"value": email, "type": "work", "primary": True}],
                name={"familyName": family},
                title=title,
                **{ENTERPRISE: {"department": department}},
            )
        )
    checked = found = 0
    for user in users:
        for path in UNICODE_ATTRIBUTES:
            stored = _attribute(user, path)
            pieces = {"eq": stored, "sw": stored[:5], "co": stored[2:7], "ew": stored[-5:]}
            for op, piece in pieces.items():
                for wanted in {
                    piece,
                    piece.lower(),
                    _shouted(piece),
                    piece.swapcase() if len(piece.swapcase()) == len(piece) else piece,
                }:
                    quoted = wanted.replace("\\", "\\\\").replace('"', '\\"')
                    page = scim.get("/Users", filter=f'{path} {op} "{quoted}"', count="100").json
                    got = {r["id"] for r in page["Resources"]}
                    expected = {u["id"] for u in users if _python_match(op, _attribute(u, path), wanted)}
                    assert got == expected, (path, op, wanted, database_url.split(":")[0])
                    checked += 1
                    found += user["id"] in got
    # The capitals and the lower case of every stored value find its person by every operator.
    assert checked > 200 and found >= checked * 3 // 4, (checked, found)
    for path, wanted in (
        ("displayName", "émilie durand"),
        ("title", "ingénieure"),
        ("name.familyName", "παπαδοπουλος"),
        ("emails.value", "ΣΟΦΙΑ@example.gr"),
        ("title", "kierownik łączności"),
        ("displayName", "HAUPTSTRAßE"),
    ):
        page = scim.get("/Users", filter=f'{path} eq "{wanted}"').json
        assert page["totalResults"] == 1, (path, wanted)
    # Lower case, not case folding: "ß" is not "ss".
    assert scim.get("/Users", filter='title eq "STRASSENBAU"').json["totalResults"] == 0
    # Sorting by a non-indexed attribute orders by the same lower case.
    page = scim.get("/Users", sortBy="name.familyName", count="10").json
    assert [r["name"]["familyName"] for r in page["Resources"]] == sorted(
        (u["name"]["familyName"] for u in users), key=str.lower
    )


def test_unicode_user_name_and_group_name_uniqueness_agree_on_both_databases(scim, database_url):
    for user_name, *_ in UNICODE_PEOPLE:
        scim.create_user(user_name)
    for user_name, *_ in UNICODE_PEOPLE:
        for other in {user_name.lower(), _shouted(user_name)} - {user_name}:
            body = {"schemas": [USER], "userName": other}
            scim_error(scim.post("/Users", body, status=409), 409, "uniqueness")
    # "STRASSE" is another name than "straße" under lower case (not folded).
    scim.create_user("STRASSE@example.de")
    scim.create_group("ΟΜΆΔΑ ΣΥΣΤΗΜΆΤΩΝ Łódź")
    for other in ("ομάδα συστημάτων łódź", "Ομάδα Συστημάτων ŁÓDŹ"):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": other}
        scim_error(scim.post("/Groups", body, status=409), 409, "uniqueness")
    page = scim.get("/Groups", filter='displayName eq "ομάδα συστημάτων łódź"').json
    assert page["totalResults"] == 1


# ---------------------------------------------------------------- the server's own limits (docs/production.md)

from test_waitress import patient_pserve  # noqa: E402,F401 - the fixture


def _raw(url: str, target: str, headers: list[str]) -> tuple[int, dict, bytes]:
    """One request as bytes on a socket (no client library's own limits): (status, headers, body)."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close", *headers]
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}, body


def _reaches_the_app(answer):
    status, headers, body = answer
    assert status == 401 and headers["content-type"] == "application/scim+json" and headers["x-request-id"], answer
    assert json.loads(body)["status"] == "401"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian", "waitress"])
def test_the_servers_own_url_and_header_limits_are_as_documented(
    patient_pserve, tmp_path, sqlite_url, idp_metadata_file, server
):
    from test_waitress import serve

    gateway = serve(patient_pserve, tmp_path, sqlite_url, server, idp_metadata_file)
    users = "/scim/v2/Users?filter="
    # Up to the limits, the request reaches the gateway, which answers as SCIM does.
    _reaches_the_app(_raw(gateway.url, users + "a" * 60_000, []))
    _reaches_the_app(
        _raw(gateway.url, "/scim/v2/Users", [f"X-Extra-{i}: v" for i in range(98)])
    )  # 100 fields with Host, Connection
    _reaches_the_app(_raw(gateway.url, "/scim/v2/Users", ["X-Big: " + "b" * 200_000]))
    if server == "granian":
        # Beyond them Granian answers itself, with no body: a request target over 65,534 bytes,
        # more than 100 header fields, a request head over 512 KiB.
        for answer, status in (
            (_raw(gateway.url, users + "a" * 66_000, []), 414),
            (_raw(gateway.url, "/scim/v2/Users", [f"X-Extra-{i}: v" for i in range(99)]), 431),
            (_raw(gateway.url, "/scim/v2/Users", ["X-Big: " + "b" * 524_300]), 431),
        ):
            assert answer[0] == status and answer[2] == b"" and "x-request-id" not in answer[1], answer[:2]
    else:
        # waitress counts no header fields, and answers a request head over 256 KiB itself, in plain text.
        _reaches_the_app(_raw(gateway.url, "/scim/v2/Users", [f"X-Extra-{i}: v" for i in range(300)]))
        status, headers, body = _raw(gateway.url, users + "a" * 262_200, [])
        assert status == 431 and headers["content-type"].startswith("text/plain") and b"max_header" in body
        assert "x-request-id" not in headers


def test_a_long_filter_within_the_servers_limits_is_a_scim_invalid_filter(scim):
    response = scim.get("/Users", filter='userName eq "' + "a" * 20_000 + '"', status=400)
    scim_error(response, 400, "invalidFilter")


# ---------------------------------------------------------------- memory: nothing kept past the identities it came from


def test_forward_auth_header_lists_go_with_the_identities_they_were_built_from(make_app, idp, database_url):
    """The soak's steady growth (docs/benchmarks.md): /auth kept a header list, holding
    the identity, for every session it had ever answered, until 50,000 had. They are
    dropped now whenever the identity cache is."""
    import webtest

    from saml_support import sign_in_as

    app = make_app(**{"sqlalchemy.url": database_url})
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    browsers = []
    for n in range(5):
        browser = webtest.TestApp(app.app)
        sign_in_as(browser, idp, f"person{n}@example.com")
        browsers.append(browser)
    for browser in browsers:
        browser.get("/auth", extra_environ=proxy, status=200)
    registry = app.app.registry
    assert len(registry.forward_auth._headers) == 5
    # Any change to who is who (here a sixth sign-in) drops the cached identities, and the header lists with them.
    sign_in_as(webtest.TestApp(app.app), idp, "person5@example.com")
    assert registry.forward_auth._headers == {}
    for browser in browsers[1:]:
        browser.get("/auth", extra_environ=proxy, status=200)
    assert len(registry.forward_auth._headers) == 4
