"""Identity headers: UTF-8 bytes on the wire on every server, nothing that breaks the header block, and a small groups header.

The wire tests run ``pserve`` on Granian (which encodes a ``str`` header
value as UTF-8 itself) and on waitress (PEP 3333: each code point of a
latin-1 ``str`` is one byte) and read the answer's raw bytes from a socket.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import urllib.parse
import uuid

import pytest
from sqlalchemy.orm import Session

from conftest import SESSION_SECRET, free_port
from gateway.db import create_engine
from gateway.db.models import Group, GroupMember, SsoSession, User, utcnow
from gateway.sessions import hash_token
from saml_support import sign_in, write_test_metadata
from test_forward_auth import PROXY, add_to_group, set_user

NAMES = {
    "latin": "Zoë José Ñúñez",
    "cjk": "李雷 韩梅梅",
    "emoji": "Ana 🎉👩🏽\u200d💻",  # a zero-width joiner inside
    "zwnj": "فرهاد عبدالله\u200cزاده",  # a zero-width non-joiner, as Persian spells names
}
GROUPS = ["Finance, EMEA", "李雷组", "Équipe 🎉"]


def sign_in_without_groups(app, idp, name: str):
    """Signed in with no group claims, so the groups are exactly those a test adds."""
    sign_in(app, idp, name, attributes=idp.claims(name, groups=()))


def wire(value: str) -> str:
    """What a PEP 3333 server (and so webtest) hands the client for UTF-8 bytes: one code point per byte."""
    return value.encode("utf-8").decode("latin-1")


# ---------------------------------------------------------------- in-process


def test_values_are_utf8_bytes_as_pep_3333_spells_them(make_app, idp):
    app = make_app(**{"forward_auth.headers": "department title"})
    sign_in_without_groups(app, idp, "zoe@example.com")
    set_user(app, "zoe@example.com", display_name=NAMES["latin"], department=NAMES["cjk"], title=NAMES["zwnj"])
    add_to_group(app, "zoe@example.com", *GROUPS)
    headers = app.get("/auth", extra_environ=PROXY, status=200).headers
    assert headers["X-Auth-Request-Name"] == wire(NAMES["latin"])
    assert headers["X-Auth-Request-Department"] == wire(NAMES["cjk"])
    assert headers["X-Auth-Request-Title"] == wire(NAMES["zwnj"])
    assert headers["X-Auth-Request-Groups"] == wire("Finance  EMEA,Équipe 🎉,李雷组")


def granian_get(app, path: str) -> tuple[str, dict]:
    """``path`` asked of the WSGI app as Granian asks (webtest's lint insists on PEP 3333's latin-1)."""
    from webob import Request

    request = Request.blank(
        path,
        environ={**PROXY, "SERVER_SOFTWARE": "Granian", "HTTP_HOST": "localhost"},
        headers={"Cookie": f"gateway_session={app.cookies['gateway_session']}"},
    )
    status, headers, body = request.call_application(app.app)
    return status, dict(headers)


def test_granian_gets_the_text_it_encodes_as_utf8_itself(make_app, idp):
    # Granian writes a str header value as its UTF-8 bytes: the latin-1
    # spelling would reach the app encoded twice ("ZoÃ«").
    app = make_app()
    sign_in(app, idp, "zoe@example.com")
    set_user(app, "zoe@example.com", display_name=NAMES["emoji"])
    for _ in range(2):  # through the view, then from memory (the fast path)
        status, headers = granian_get(app, "/auth")
        assert status.startswith("200") and headers["X-Auth-Request-Name"] == NAMES["emoji"]
    # The same cached identity on a PEP 3333 server gets the PEP 3333 spelling.
    assert app.get("/auth", extra_environ=PROXY, status=200).headers["X-Auth-Request-Name"] == wire(NAMES["emoji"])


@pytest.mark.parametrize("encoding", ["utf-8", "percent"])
def test_control_characters_never_break_the_header_block(make_app, idp, encoding):
    app = make_app(**{"forward_auth.headers": "title", "forward_auth.header_encoding": encoding})
    sign_in(app, idp, "eve@example.com")
    set_user(app, "eve@example.com", display_name="Eve\r\nX-Injected: yes", title="a\x00b\x7fc\x85d\te\x0bf")
    response = app.get("/auth", extra_environ=PROXY, status=200)
    assert "X-Injected" not in response.headers
    if encoding == "utf-8":
        assert response.headers["X-Auth-Request-Name"] == "Eve  X-Injected: yes"
        assert response.headers["X-Auth-Request-Title"] == "a b c d e f"
    else:
        assert response.headers["X-Auth-Request-Name"] == "Eve%0D%0AX-Injected: yes"
        assert response.headers["X-Auth-Request-Title"] == "a%00b%7Fc%C2%85d%09e%0Bf"


def test_percent_encoding_keeps_every_value_ascii_and_lossless(make_app, idp):
    app = make_app(**{"forward_auth.header_encoding": "percent"})
    sign_in_without_groups(app, idp, "zoe@example.com")
    set_user(app, "zoe@example.com", display_name="Zoë 100% sure, 李")
    add_to_group(app, "zoe@example.com", *GROUPS)
    for environ in (PROXY, {**PROXY, "SERVER_SOFTWARE": "Granian"}):
        headers = app.get("/auth", extra_environ=environ, status=200).headers
        assert headers["X-Auth-Request-Name"] == "Zo%C3%AB 100%25 sure%2C %E6%9D%8E"
        assert urllib.parse.unquote(headers["X-Auth-Request-Name"]) == "Zoë 100% sure, 李"
        groups = [urllib.parse.unquote(g) for g in headers["X-Auth-Request-Groups"].split(",")]
        assert groups == sorted(GROUPS)  # a comma inside a name is kept (%2C)
        assert all(value.isascii() for value in headers.values())


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("all", "Auditors,Finance,Ops"),
        ("rules", "Finance,Ops"),
        ('Auditors "No Such Group"', "Auditors"),
    ],
)
def test_pass_groups_keeps_the_groups_header_small(make_app, idp, setting, expected):
    app = make_app(
        **{
            "forward_auth.pass_groups": setting,
            "forward_auth.proxy": "nginx",
            "forward_auth.rules": "app.example.com /reports Finance\napp.example.com / Ops Staff *",
        }
    )
    sign_in_without_groups(app, idp, "paul@example.com")
    add_to_group(app, "paul@example.com", "Finance", "Ops", "Auditors")
    headers = app.get(
        "/auth", headers={"X-Original-URL": "https://app.example.com/"}, extra_environ=PROXY, status=200
    ).headers
    assert headers["X-Auth-Request-Groups"] == expected


def test_a_header_block_too_big_for_nginx_defaults_is_logged_once(make_app, idp, caplog):
    # Entra puts at most 150 groups in a token; as object ids that is 5,549 bytes.
    app = make_app()
    sign_in_without_groups(app, idp, "greta@example.com")
    ids = sorted(str(uuid.uuid4()) for _ in range(150))
    add_to_group(app, "greta@example.com", *ids)
    with caplog.at_level(logging.WARNING, logger="gateway.forward_auth"):
        groups = app.get("/auth", extra_environ=PROXY, status=200).headers["X-Auth-Request-Groups"]
        app.get("/auth", extra_environ=PROXY, status=200)
    assert groups.split(",") == ids and len(groups) == 5549
    warnings = [r for r in caplog.records if "proxy_buffer_size" in r.getMessage()]
    assert len(warnings) == 1 and "150 groups" in warnings[0].getMessage()


# ---------------------------------------------------------------- on the wire, through pserve


SERVERS = {
    "granian": "use = egg:entra-identity-gateway#granian\nlisten = 127.0.0.1:{port}\nworkers = 1\n",
    "waitress": "use = egg:waitress#main\nlisten = 127.0.0.1:{port}\n",
}


def serve_with_person(tmp_path, pserve, server: str, encoding: str) -> tuple[int, str]:
    """A gateway on ``server`` with one signed-in person whose names are not ASCII; returns (port, cookie)."""
    port = free_port()
    database = tmp_path / "gateway.sqlite"
    ini = tmp_path / "gateway.ini"
    ini.write_text(
        "[app:main]\nuse = egg:entra-identity-gateway\n"
        "gateway.base_url = http://127.0.0.1\ngateway.plugins = entra\n"
        f"saml.idp_metadata = {write_test_metadata(tmp_path)}\n"
        f"sqlalchemy.url = sqlite:///{database}\n"
        f"session.secret = {SESSION_SECRET}\nsession.cookie_secure = false\n"
        f"forward_auth.headers = title department given_name\nforward_auth.header_encoding = {encoding}\n\n"
        "[server:main]\n" + SERVERS[server].format(port=port)
    )
    pserve(ini, port)
    token = uuid.uuid4().hex + uuid.uuid4().hex[:12]
    engine = create_engine(f"sqlite:///{database}")
    now = utcnow()
    with Session(engine) as session, session.begin():
        user = User(
            user_name="李雷@example.com",
            user_name_key="李雷@example.com",
            email="zoe@example.com",
            display_name=NAMES["latin"],
            title=NAMES["emoji"],
            department="Lead\r\nX-Injected: yes",
            given_name=NAMES["zwnj"],
        )
        session.add(user)
        session.flush()
        for name in GROUPS:
            group = Group(display_name=name, display_name_key=name.lower())
            session.add(group)
            session.flush()
            session.add(GroupMember(group_id=group.id, user_id=user.id))
        session.add(
            SsoSession(
                id_hash=hash_token(SESSION_SECRET, token),
                user_id=user.id,
                csrf_token="x",
                last_seen_at=now,
                expires_at=now + dt.timedelta(hours=1),
            )
        )
    engine.dispose()
    return port, token


def raw_headers(port: int, cookie: str) -> tuple[bytes, dict[bytes, bytes]]:
    """GET /auth over a plain socket: the status line and the header bytes exactly as sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: gateway_session={cookie}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        assert name.lower() not in headers, f"header sent twice: {name!r}"
        headers[name.lower()] = value.strip(b" ")
    return head[0], headers


@pytest.mark.slow
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_utf8_bytes_on_the_wire(tmp_path, pserve, server):
    port, cookie = serve_with_person(tmp_path, pserve, server, "utf-8")
    for _ in range(2):  # through Pyramid, then from memory
        status, headers = raw_headers(port, cookie)
        assert status.startswith(b"HTTP/1.1 200"), status
        assert headers[b"x-auth-request-name"] == NAMES["latin"].encode()
        assert headers[b"x-auth-request-user"] == "李雷@example.com".encode()
        assert headers[b"x-auth-request-title"] == NAMES["emoji"].encode()
        assert headers[b"x-auth-request-given-name"] == NAMES["zwnj"].encode()
        assert headers[b"x-auth-request-department"] == b"Lead  X-Injected: yes"
        assert b"x-injected" not in headers
        assert headers[b"x-auth-request-groups"] == ",".join(sorted(["Finance  EMEA", *GROUPS[1:]])).encode()


@pytest.mark.slow
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_percent_encoded_values_on_the_wire(tmp_path, pserve, server):
    port, cookie = serve_with_person(tmp_path, pserve, server, "percent")
    _, headers = raw_headers(port, cookie)
    assert headers[b"x-auth-request-name"] == b"Zo%C3%AB Jos%C3%A9 %C3%91%C3%BA%C3%B1ez"
    assert headers[b"x-auth-request-department"] == b"Lead%0D%0AX-Injected: yes"
    groups = [urllib.parse.unquote(g) for g in headers[b"x-auth-request-groups"].decode("ascii").split(",")]
    assert groups == sorted(GROUPS)
    assert urllib.parse.unquote(headers[b"x-auth-request-title"].decode("ascii")) == NAMES["emoji"]
