"""Contractors sign in only from an approved group: real signed sign-ins through the kit."""

from acme_gateway.policy import DENIED


def test_an_employee_signs_in(gateway_app, gateway_sign_in):
    gateway_sign_in("ann@acme.example", groups=())
    assert gateway_app.get("/whoami").json["userName"] == "ann@acme.example"


def test_a_contractor_outside_the_approved_groups_is_refused(gateway_app, gateway_sign_in, gateway_events):
    response = gateway_sign_in("cal@contractors.acme.example", groups=("Staff",), status=403)
    assert "only as members of an approved group" in response.text
    assert gateway_app.get("/whoami", status=401)
    assert gateway_events.types() == ["denied"]
    assert gateway_events.events[0].reason == DENIED


def test_a_contractor_in_an_approved_group_signs_in(gateway_app, gateway_sign_in):
    # Group names are compared case-insensitively.
    gateway_sign_in("dee@contractors.acme.example", groups=("approved contractors",))
    assert gateway_app.get("/whoami").json["userName"] == "dee@contractors.acme.example"


def test_a_provisioned_membership_counts(gateway_app, gateway_scim, gateway_sign_in):
    # SCIM creates are left alone (Entra adds the groups afterwards) ...
    user = gateway_scim.create_user(
        "eve@contractors.acme.example", emails=[{"value": "eve@contractors.acme.example", "primary": True}]
    )
    gateway_scim.create_group("Approved Contractors", members=[user["id"]])
    # ... and the stored membership lets her in without a groups claim.
    gateway_sign_in("eve@contractors.acme.example", groups=())
    assert gateway_app.get("/whoami").json["id"] == user["id"]
