"""The shipped attribute transforms (plugin ``transforms``) and how the core applies them."""

from __future__ import annotations

import pytest

from gateway import ConfigError, hookimpl
from gateway.interfaces import AttributeTransform
from saml_support import MICROSOFT, XMLSOAP, sign_in

OID = "709cd037-9bbb-4dd2-a6ce-a8838ddcb62a"


def whoami_after_sign_in(app, idp, claims, name="alice@example.com"):
    sign_in(app, idp, name, attributes=claims)
    return app.get("/whoami").json


def test_lowercase_email(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra transforms", "attributes.transforms": "lowercase_email"})
    claims = idp.claims("alice@example.com", oid=OID)
    claims[XMLSOAP + "emailaddress"] = [" Alice.Smith@Example.COM "]
    assert whoami_after_sign_in(app, idp, claims)["email"] == "alice.smith@example.com"


def test_map_values_on_a_field_and_a_custom_attribute(make_app, idp):
    app = make_app(
        **{
            "gateway.plugins": "entra transforms",
            "attributes.transforms": "map_values",
            "map_values.department": "# codes from HR\n100 = Sales\n200 = Research and Development",
            "map_values.title": "sr eng = Senior Engineer",
        }
    )
    claims = {**idp.claims("alice@example.com", oid=OID), "department": ["200"], "jobtitle": ["SR ENG"]}
    attributes = whoami_after_sign_in(app, idp, claims)["attributes"]
    assert attributes["department"] == "Research and Development"
    assert attributes["title"] == "Senior Engineer"  # matched case-insensitively

    claims["department"] = ["999"]  # not in the table: kept as it is
    app.reset()
    assert whoami_after_sign_in(app, idp, claims)["attributes"]["department"] == "999"


def test_compose_display_name_only_when_none_is_given(make_app, idp):
    app = make_app(**{"gateway.plugins": "entra transforms", "attributes.transforms": "compose_display_name"})
    claims = idp.claims("alice@example.com", oid=OID)
    claims[XMLSOAP + "givenname"] = ["Alice"]
    claims[XMLSOAP + "surname"] = ["Smith"]
    assert whoami_after_sign_in(app, idp, claims)["displayName"] == "Alice Example"  # Entra's own stays
    del claims[MICROSOFT + "displayname"]
    app.reset()
    assert whoami_after_sign_in(app, idp, claims)["displayName"] == "Alice Smith"


class Marker:
    """A site plugin with two transforms that each append their name to the title."""

    @hookimpl
    def gateway_attribute_transforms(self):
        def append(name):
            def apply(profile, context):
                assert context.source == "saml"
                profile["title"] = (profile.get("title") or "") + name
                return profile

            return AttributeTransform(name, apply)

        return [append("A"), append("B")]


@pytest.mark.parametrize("order", ["A B", "B A"])
def test_transforms_run_in_the_order_of_the_setting(make_app, idp, order, monkeypatch):
    import gateway.plugins

    # The core's own plugins are built per app: adding one here registers it
    # before the ini's plugins, as a site plugin would be.
    real = gateway.plugins.core_plugins
    monkeypatch.setattr(gateway.plugins, "core_plugins", lambda settings: {**real(settings), "marker": Marker()})
    app = make_app(**{"attributes.transforms": order})
    title = whoami_after_sign_in(app, idp, idp.claims("alice@example.com", oid=OID))["attributes"]["title"]
    assert title == order.replace(" ", "")


def test_an_unknown_transform_stops_start_up_naming_the_setting(make_app):
    with pytest.raises(
        ConfigError, match=r'^attributes\.transforms: no enabled plugin registers the transform "lowercase"'
    ):
        make_app(**{"gateway.plugins": "entra transforms", "attributes.transforms": "lowercase"})
    with pytest.raises(ConfigError, match=r"^attributes\.transforms: .*\"lowercase_email\""):
        make_app(**{"attributes.transforms": "lowercase_email"})  # plugin not enabled


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("map_values.department", "100 Sales", r'^map_values\.department: expected one "from = to" per line'),
        ("map_values.colour", "a = b", r'^map_values\.colour: unknown profile field "colour"'),
    ],
)
def test_map_values_settings_are_checked_at_start_up(make_app, key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_app(**{"gateway.plugins": "entra transforms", "attributes.transforms": "map_values", key: value})


def test_map_values_listed_without_a_table_stops_start_up(make_app):
    with pytest.raises(ConfigError, match=r"^attributes\.transforms: map_values is listed but no map_values"):
        make_app(**{"gateway.plugins": "entra transforms", "attributes.transforms": "map_values"})
