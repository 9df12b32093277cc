"""The acme_level transform, on the profile of a real sign-in and of a SCIM user."""

import pytest

TITLE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/title"


@pytest.mark.parametrize(
    "title, level",
    [
        ("Senior Software Engineer", "senior"),
        ("Vice President, Sales", "executive"),
        ("Summer Intern", "junior"),
        ("Accountant", "staff"),
        (None, "staff"),
    ],
)
def test_the_title_gives_the_level(gateway_app, gateway_sign_in, title, level):
    gateway_sign_in("ann@acme.example", claims={TITLE: title})
    attributes = gateway_app.get("/whoami").json["attributes"]
    assert attributes["level"] == level


def test_a_site_table_replaces_the_default(gateway_make_app, gateway_sign_in):
    app = gateway_make_app(**{"acme.levels": "engineer = tech\nsenior = senior", "acme.default_level": "other"})
    gateway_sign_in("ann@acme.example", app=app, claims={TITLE: "Senior Engineer"})
    assert app.get("/whoami").json["attributes"]["level"] == "tech"  # the first line that matches wins


def test_a_scim_title_change_changes_the_level(gateway_app, gateway_scim, gateway_sign_in):
    user = gateway_scim.create_user("bo@acme.example", title="Junior Analyst")
    gateway_sign_in("bo@acme.example", claims={TITLE: None})
    assert gateway_app.get("/whoami").json["attributes"]["level"] == "junior"
    gateway_scim.patch_ops(f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": "Director of Finance"})
    assert gateway_app.get("/whoami").json["attributes"]["level"] == "lead"
