"""A site's claim map (``saml.claims.<field>``): real signed sign-ins carrying the extra claims."""

from __future__ import annotations

import pytest

from gateway import ConfigError
from test_cli import run, write_ini

COST_CENTER = "http://schemas.acme.example/claims/costcenter"
JOB_TITLE = "http://schemas.acme.example/claims/jobtitle"
EMPLOYEE_ID = "http://schemas.acme.example/claims/employeeid"
ENTRA_TITLE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/title"

SITE_CLAIMS = {"saml.claims.custom.costCenter": COST_CENTER, "saml.claims.title": JOB_TITLE}


def test_a_site_claim_is_added_and_an_override_wins(make_app, database_url, gateway_sign_in):
    app = make_app(**{"sqlalchemy.url": database_url, **SITE_CLAIMS})
    gateway_sign_in(
        "bob@example.com",
        app=app,
        claims={COST_CENTER: "CC-42", JOB_TITLE: "Engineer", ENTRA_TITLE: "The profile's claim, overridden"},
    )
    attributes = app.get("/whoami").json["attributes"]
    assert attributes["costCenter"] == "CC-42"
    assert attributes["title"] == "Engineer"
    # The rest of Entra's claim map still counts.
    assert attributes["given_name"] == "Bob"


def test_without_the_setting_the_extra_claims_are_not_taken(make_app, database_url, gateway_sign_in):
    app = make_app(**{"sqlalchemy.url": database_url})
    gateway_sign_in(
        "bob@example.com", app=app, claims={COST_CENTER: "CC-42", JOB_TITLE: "Engineer", ENTRA_TITLE: "Analyst"}
    )
    attributes = app.get("/whoami").json["attributes"]
    assert "costCenter" not in attributes
    assert attributes["title"] == "Analyst"


def test_a_subject_claim_becomes_the_lasting_key(make_app, gateway_sign_in):
    # Two different object ids with one employee id: the same person to this site.
    app = make_app(**{"saml.claims.subject": EMPLOYEE_ID})
    gateway_sign_in(
        "kim@example.com", app=app, oid="00000000-0000-0000-0000-00000000000a", claims={EMPLOYEE_ID: "E-1001"}
    )
    first = app.get("/whoami").json["id"]
    app.reset()
    gateway_sign_in(
        "kim@example.com", app=app, oid="00000000-0000-0000-0000-00000000000b", claims={EMPLOYEE_ID: "E-1001"}
    )
    assert app.get("/whoami").json["id"] == first


def test_without_it_a_new_object_id_is_another_person(make_app, gateway_sign_in):
    app = make_app()
    gateway_sign_in("kim@example.com", app=app, oid="00000000-0000-0000-0000-00000000000a")
    app.reset()
    response = gateway_sign_in("kim@example.com", app=app, oid="00000000-0000-0000-0000-00000000000b", status=403)
    assert "belongs to another person" in response.text


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "saml.claims.costCenter",
            COST_CENTER,
            'saml.claims.costCenter: unknown profile field "costCenter"; expected one of subject, email,',
        ),
        ("saml.claims.custom.", COST_CENTER, 'saml.claims.custom.: unknown profile field "custom."'),
        ("saml.claims", COST_CENTER, 'saml.claims: unknown setting (did you mean "saml.claims.<field>"?)'),
    ],
)
def test_a_bad_key_stops_start_up_naming_it(make_app, key, value, message):
    with pytest.raises(ConfigError) as info:
        make_app(**{key: value})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_one_claim_for_two_fields_stops_start_up(make_app):
    with pytest.raises(ConfigError) as info:
        make_app(**{"saml.claims.title": JOB_TITLE, "saml.claims.custom.role": JOB_TITLE})
    assert (
        str(info.value) == f'saml.claims.title: "{JOB_TITLE}" is already given by saml.claims.custom.role; give it once'
    )


def test_check_names_the_bad_claim_key(tmp_path):
    ini = write_ini(
        tmp_path / "gw.ini", f"sqlite:///{tmp_path}/gateway.sqlite", **{"saml.claims.costcentre": COST_CENTER}
    )
    result = run(ini, "check")
    assert result.returncode == 1
    assert 'saml.claims.costcentre: unknown profile field "costcentre"' in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
