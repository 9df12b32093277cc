"""Start-up refuses bad configuration with one line naming the key."""

import pytest

from conftest import close_app
from gateway import ConfigError, main
from gateway.settings import parse_settings


def build(base_settings, sqlite_url, **overrides):
    settings = {"sqlalchemy.url": sqlite_url, **base_settings, **overrides}
    return main({}, **{k: v for k, v in settings.items() if v is not None})


def refusal(base_settings, sqlite_url, **overrides) -> str:
    with pytest.raises(ConfigError) as info:
        build(base_settings, sqlite_url, **overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_settings_build_the_app(base_settings, sqlite_url):
    app = build(base_settings, sqlite_url)
    settings = app.registry.gateway_settings
    assert settings.saml.clock_skew == 180
    assert settings.provisioning.mode == {"scim", "first_login"}
    assert settings.sp_entity_id == "http://localhost/saml/metadata"
    close_app(app)


def test_bad_integer_names_key_value_and_expectation(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"saml.clock_skew": "ten"})
    assert message == 'saml.clock_skew: expected a whole number of seconds between 0 and 600, got "ten"'


def test_integer_out_of_range(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"saml.clock_skew": "601"})
    assert message.startswith("saml.clock_skew:") and '"601"' in message


def test_unknown_key_is_an_error_with_a_suggestion(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"saml.clock_skw": "10"})
    assert message == 'saml.clock_skw: unknown setting (did you mean "saml.clock_skew"?)'


@pytest.mark.parametrize("prefix", ["gateway", "scim", "provisioning", "session", "attributes", "forward_auth"])
def test_unknown_key_under_every_core_prefix(base_settings, sqlite_url, prefix):
    message = refusal(base_settings, sqlite_url, **{f"{prefix}.no_such_key": "1"})
    assert message.startswith(f"{prefix}.no_such_key: unknown setting")


def test_plugin_owned_prefixes_are_left_to_plugins(base_settings, sqlite_url):
    app = build(base_settings, sqlite_url, **{"seat_limit.max_users": "10"})
    assert app.registry.settings["seat_limit.max_users"] == "10"
    close_app(app)


@pytest.mark.parametrize(
    "url",
    ["auth.example.com", "ftp://auth.example.com", "http://auth.example.com", "https://auth.example.com/?x=1"],
)
def test_bad_base_url(base_settings, sqlite_url, url):
    message = refusal(base_settings, sqlite_url, **{"gateway.base_url": url})
    assert message.startswith("gateway.base_url: expected") and f'got "{url}"' in message


def test_missing_required_key(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"gateway.base_url": None})
    assert message == "gateway.base_url: required setting is missing"


def test_bad_database_url(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"sqlalchemy.url": "mysql://x/y"})
    assert message.startswith("sqlalchemy.url: expected a SQLAlchemy URL")


def test_unreadable_metadata_file(base_settings, sqlite_url, tmp_path):
    missing = tmp_path / "nope.xml"
    message = refusal(base_settings, sqlite_url, **{"saml.idp_metadata": str(missing)})
    assert message == f'saml.idp_metadata: expected a readable file or an https URL, got "{missing}"'


def test_metadata_over_plain_http_is_refused(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"saml.idp_metadata": "http://login.example.com/md.xml"})
    assert message.startswith("saml.idp_metadata: expected a readable file or an https URL")


@pytest.mark.parametrize("key", ["saml.key_file", "saml.cert_file"])
def test_unreadable_key_and_cert_files(base_settings, sqlite_url, tmp_path, key):
    message = refusal(base_settings, sqlite_url, **{key: str(tmp_path / "missing.pem")})
    assert message.startswith(f"{key}: expected a readable file")


def test_bad_boolean_and_choice(base_settings, sqlite_url):
    assert refusal(base_settings, sqlite_url, **{"saml.allow_idp_initiated": "maybe"}).startswith(
        "saml.allow_idp_initiated: expected true or false"
    )
    assert refusal(base_settings, sqlite_url, **{"saml.require_signed": "never"}).startswith(
        "saml.require_signed: expected one of assertion, response, either, both"
    )


def test_sha1_is_not_a_default_but_can_be_named(base_settings, sqlite_url):
    raw = {"sqlalchemy.url": sqlite_url, **base_settings}
    assert "rsa-sha1" not in parse_settings(raw).saml.allowed_signature_algorithms
    raw["saml.allowed_signature_algorithms"] = "rsa-sha256 rsa-sha1"
    assert parse_settings(raw).saml.allowed_signature_algorithms == ("rsa-sha256", "rsa-sha1")
    raw["saml.allowed_signature_algorithms"] = "rsa-md5"
    with pytest.raises(ConfigError, match="saml.allowed_signature_algorithms: expected names from"):
        parse_settings(raw)


def test_short_secret_is_refused_without_echoing_it(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"session.secret": "hunter2"})
    assert message == 'session.secret: expected a random secret of at least 32 characters, got "7 characters"'


def test_secure_cookies_over_http_are_refused(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"session.cookie_secure": "true"})
    assert message.startswith("session.cookie_secure:")


def test_provisioning_mode_words(base_settings, sqlite_url):
    raw = {"sqlalchemy.url": sqlite_url, **base_settings, "provisioning.mode": "first_login"}
    assert parse_settings(raw).provisioning.mode == {"first_login"}
    raw["provisioning.mode"] = "jit"
    with pytest.raises(ConfigError, match='provisioning.mode: expected "scim", "first_login"'):
        parse_settings(raw)


# ---------------------------------------------------------------- ${NAME} from the environment


def test_environment_references_are_expanded_in_any_setting(base_settings, sqlite_url, monkeypatch, tmp_path):
    from gateway.settings import expand_environment

    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "x" * 40 + "\n")
    environ = {"SKEW": "42", "GW_SECRET_FILE": str(secret), "EMPTY": ""}
    raw = {
        "saml.clock_skew": "${SKEW}",
        "session.secret": "${GW_SECRET}",
        "gateway.base_url": "${BASE:-http://localhost}",
        "seat_limit.max_users": "${EMPTY:-7}",
        "plain": "cost $5, a $${LITERAL} stays",
    }
    expanded = expand_environment(raw, environ)
    assert expanded == {
        "saml.clock_skew": "42",
        "session.secret": "from-a-file-" + "x" * 40,  # one trailing newline dropped
        "gateway.base_url": "http://localhost",
        "seat_limit.max_users": "7",
        "plain": "cost $5, a ${LITERAL} stays",
    }
    # Through the app factory, as pserve and every worker load it.
    monkeypatch.setenv("GATEWAY_TEST_SKEW", "33")
    app = build(base_settings, sqlite_url, **{"saml.clock_skew": "${GATEWAY_TEST_SKEW}"})
    assert app.registry.gateway_settings.saml.clock_skew == 33
    assert app.registry.settings["saml.clock_skew"] == "33"
    close_app(app)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "session.secret: environment variable GW_SECRET is not set (nor GW_SECRET_FILE)"),
        ({"GW_SECRET": ""}, "session.secret: environment variable GW_SECRET is not set (nor GW_SECRET_FILE)"),
        (
            {"GW_SECRET": "a", "GW_SECRET_FILE": "/x"},
            "session.secret: both GW_SECRET and GW_SECRET_FILE are set; set only one",
        ),
        (
            {"GW_SECRET_FILE": "/nonexistent/secret"},
            "session.secret: GW_SECRET_FILE names /nonexistent/secret, which cannot be read (No such file or directory)",
        ),
    ],
)
def test_environment_reference_problems_name_the_setting_and_variable(environ, expected):
    from gateway.settings import expand_environment

    with pytest.raises(ConfigError) as info:
        expand_environment({"session.secret": "${GW_SECRET}"}, environ)
    assert str(info.value) == expected


def test_an_empty_secret_file_is_refused(tmp_path):
    from gateway.settings import expand_environment

    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=f"session.secret: GW_SECRET_FILE names {empty}, which is empty"):
        expand_environment({"session.secret": "${GW_SECRET}"}, {"GW_SECRET_FILE": str(empty)})


def test_a_password_in_a_bad_database_url_is_not_shown(base_settings, sqlite_url):
    message = refusal(base_settings, sqlite_url, **{"sqlalchemy.url": "mysql://gw:s3cret-pw@db/gw"})
    assert "s3cret-pw" not in message and "mysql://gw:***@db/gw" in message
