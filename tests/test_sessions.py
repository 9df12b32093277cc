"""Server-side sessions: cookie flags, rotation, timeouts, logout with CSRF, deactivation."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from gateway import sessions
from gateway.db.models import Group, GroupMember, SsoSession, User, utcnow
from saml_support import sign_in


def session_rows(app):
    with app.app.registry.dbsession_factory() as db:
        return db.scalars(sa.select(SsoSession).order_by(SsoSession.created_at)).all()


def cookie(response, name="gateway_session"):
    for header in response.headers.getall("Set-Cookie"):
        if header.startswith(name + "="):
            return header
    raise AssertionError(f"no {name} cookie in {response.headers}")


def test_cookie_flags_over_http(saml_app, idp):
    header = cookie(sign_in(saml_app, idp))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "secure" not in header.lower()  # session.cookie_secure = false in the test settings


def test_cookie_is_secure_with_https_and_has_the_domain(make_app, idp):
    app = make_app(
        **{
            "gateway.base_url": "https://auth.example.com",
            "session.cookie_secure": "true",
            "session.cookie_domain": ".example.com",
            "session.cookie_name": "gw",
            "saml.sp_entity_id": "http://localhost/saml/metadata",
        }
    )
    # Responses are addressed to the https ACS of this gateway.
    from saml_support import post_response, start_login

    request_id = start_login(app)
    xml = idp.response(
        request_id, recipient="https://auth.example.com/saml/acs", destination="https://auth.example.com/saml/acs"
    )
    header = cookie(post_response(app, xml, status=303, extra_environ={"wsgi.url_scheme": "https"}), "gw")
    assert "secure" in header.lower()
    assert "Domain=.example.com" in header or "Domain=example.com" in header
    assert "HttpOnly" in header and "SameSite=Lax" in header


def test_rows_keep_only_a_hash_of_the_cookie(saml_app, idp):
    token = cookie(sign_in(saml_app, idp)).split(";")[0].split("=", 1)[1]
    (row,) = session_rows(saml_app)
    secret = saml_app.app.registry.gateway_settings.session.secret
    assert row.id_hash == sessions.hash_token(secret, token) and token not in row.id_hash


def test_a_row_written_without_the_secret_is_no_session(saml_app, idp):
    # Someone who can write to the database but does not know session.secret
    # inserts a row keyed by the plain SHA-256 of a cookie of their choosing.
    import hashlib

    sign_in(saml_app, idp)
    (row,) = session_rows(saml_app)
    forged = "f" * 43
    with saml_app.app.registry.dbsession_factory() as db, db.begin():
        db.add(
            SsoSession(
                id_hash=hashlib.sha256(forged.encode()).hexdigest(),
                user_id=row.user_id,
                expires_at=row.expires_at,
                csrf_token="x",
            )
        )
    saml_app.reset()
    saml_app.set_cookie("gateway_session", forged)
    saml_app.get("/whoami", status=401)


def test_sign_in_rotates_the_session_id(saml_app, idp):
    first = cookie(sign_in(saml_app, idp)).split(";")[0]
    second = cookie(sign_in(saml_app, idp)).split(";")[0]
    assert first != second
    rows = session_rows(saml_app)
    assert len(rows) == 2 and rows[0].ended_at is not None and rows[1].ended_at is None
    assert saml_app.get("/whoami").json["userName"] == "alice@example.com"


def _age(app, **changes):
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(SsoSession).values(**changes))


def test_idle_timeout_ends_the_session(saml_app, idp):
    sign_in(saml_app, idp)
    _age(saml_app, last_seen_at=utcnow() - dt.timedelta(seconds=3601))
    saml_app.get("/whoami", status=401)


def test_activity_keeps_the_session_alive_and_writes_at_most_once_a_minute(saml_app, idp):
    sign_in(saml_app, idp)
    _age(saml_app, last_seen_at=utcnow() - dt.timedelta(seconds=30))
    before = session_rows(saml_app)[0].last_seen_at
    saml_app.get("/whoami", status=200)
    assert session_rows(saml_app)[0].last_seen_at == before  # fresh enough: no write
    _age(saml_app, last_seen_at=utcnow() - dt.timedelta(seconds=3000))
    saml_app.get("/whoami", status=200)
    assert utcnow() - session_rows(saml_app)[0].last_seen_at < dt.timedelta(seconds=10)


def test_absolute_timeout_ends_the_session(saml_app, idp):
    sign_in(saml_app, idp)
    _age(saml_app, expires_at=utcnow() - dt.timedelta(seconds=1))
    saml_app.get("/whoami", status=401)


def test_deactivated_user_is_refused_at_once(saml_app, idp, database_url, make_app):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp)
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.execute(sa.update(User).values(active=False))
    app.get("/whoami", status=401)


def test_end_sessions_for_user(make_app, idp, database_url):
    app = make_app(**{"sqlalchemy.url": database_url})
    sign_in(app, idp)
    with app.app.registry.dbsession_factory() as db, db.begin():
        user_id = db.scalars(sa.select(User.id)).one()
        assert sessions.end_sessions_for_user(db, user_id) == 1
    app.get("/whoami", status=401)


def test_whoami_lists_groups(make_app, idp, database_url):
    app = make_app(**{"sqlalchemy.url": database_url})
    # No groups claim: this user's groups are the ones added below.
    sign_in(app, idp, attributes=idp.claims(groups=()))
    with app.app.registry.dbsession_factory() as db, db.begin():
        user_id = db.scalars(sa.select(User.id)).one()
        for name in ("Staff", "Admins"):
            group = Group(display_name=name, display_name_key=name.lower())
            db.add(group)
            db.flush()
            db.add(GroupMember(group_id=group.id, user_id=user_id))
    who = app.get("/whoami").json
    assert who["groups"] == ["Admins", "Staff"]
    assert set(who) == {"id", "userName", "email", "displayName", "groups", "attributes"}
    assert app.get("/").text.count("Admins, Staff") == 1


def test_whoami_without_session_is_401_json(saml_app):
    response = saml_app.get("/whoami", status=401)
    assert response.json["error"] == "not signed in"
    saml_app.set_cookie("gateway_session", "x" * 43)
    saml_app.get("/whoami", status=401)


def test_home_shows_sign_in_button_with_profile_label(saml_app):
    page = saml_app.get("/")
    assert "Sign in with Microsoft Entra ID" in page.text and 'href="/saml/login"' in page.text


def test_logout_requires_the_csrf_token(saml_app, idp):
    sign_in(saml_app, idp)
    response = saml_app.post("/logout", {"csrf_token": "forged"}, status=403)
    assert response.headers["X-Reason"] == "csrf"
    saml_app.post("/logout", status=403)
    assert saml_app.get("/whoami").status_int == 200


def test_logout_ends_the_session_and_goes_to_the_idp(saml_app, idp):
    sign_in(saml_app, idp)
    form = saml_app.get("/").forms[0]
    response = form.submit(status=303)
    assert response.headers["Location"].startswith("https://login.microsoftonline.com/")
    assert "SAMLRequest=" in response.headers["Location"]
    assert "gateway_session=;" in cookie(response)
    saml_app.get("/whoami", status=401)
    assert session_rows(saml_app)[0].ended_at is not None


def test_old_cookie_does_not_work_after_logout(saml_app, idp):
    token = cookie(sign_in(saml_app, idp)).split(";")[0].split("=", 1)[1]
    saml_app.get("/").forms[0].submit(status=303)
    saml_app.set_cookie("gateway_session", token)
    saml_app.get("/whoami", status=401)


def test_signing_in_fires_events(make_app, idp):
    seen = []

    class Recorder:
        from gateway import hookimpl

        @hookimpl
        def gateway_user_event(self, event):
            seen.append((event.type, event.user_name, event.source))

    app = make_app()
    app.app.registry.pm.register(Recorder())
    sign_in(app, idp)
    app.get("/").forms[0].submit(status=303)
    assert seen == [
        ("created", "alice@example.com", "saml"),
        ("signed_in", "alice@example.com", "saml"),
        ("signed_out", "alice@example.com", "saml"),
    ]


def test_denied_sign_in_shows_the_reason(make_app, idp):
    app = make_app(**{"provisioning.mode": "scim"})
    from saml_support import post_response, start_login

    request_id = start_login(app)
    response = post_response(app, idp.response(request_id), status=403)
    assert response.headers["X-Reason"] == "denied"
    assert "not assigned to this application" in response.text
    app.get("/whoami", status=401)


def test_scim_provisioned_user_is_found_by_user_name_and_linked(make_app, idp):
    app = make_app(**{"provisioning.mode": "scim"})
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.add(User(user_name="Alice@Example.com", user_name_key="alice@example.com", provisioned_by="scim"))
    sign_in(app, idp)
    with app.app.registry.dbsession_factory() as db:
        user = db.scalars(sa.select(User)).one()
        assert user.idp_subject == "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"
    assert app.get("/whoami").json["userName"] == "Alice@Example.com"


def test_deactivated_user_cannot_sign_in(make_app, idp):
    app = make_app()
    with app.app.registry.dbsession_factory() as db, db.begin():
        db.add(User(user_name="alice@example.com", user_name_key="alice@example.com", active=False))
    from saml_support import post_response, start_login

    response = post_response(app, idp.response(start_login(app)), status=403)
    assert "deactivated" in response.text


def test_the_recorded_address_believes_x_forwarded_for_only_from_a_trusted_proxy(saml_app, idp):
    # From an address outside forward_auth.trusted_proxies the header is the client's own say-so.
    saml_app.extra_environ.update(REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="10.9.8.7")
    sign_in(saml_app, idp)
    # From the proxy on loopback: the rightmost hop that is not a trusted proxy.
    saml_app.extra_environ.update(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.8.7, 198.51.100.7, 127.0.0.1")
    sign_in(saml_app, idp)
    assert [row.remote_addr for row in session_rows(saml_app)] == ["203.0.113.5", "198.51.100.7"]
