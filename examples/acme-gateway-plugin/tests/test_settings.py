"""The declared acme.* settings: checked at start-up, naming the key."""

import pytest

from gateway import ConfigError


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"acme.events_file": None}, "acme.events_file: required setting is missing"),
        ({"acme.event_file": "/tmp/x.jsonl"}, 'acme.event_file: unknown setting (did you mean "acme.events_file"?)'),
        (
            {"acme.contractor_domains": "not a domain!"},
            'acme.contractor_domains: expected email domains such as contractors.acme.example, got "not a domain!"',
        ),
        (
            {"acme.levels": "engineer = tech\nsenior"},
            'acme.levels: expected one "title words = level" per line, got "senior"',
        ),
        (
            {"acme.events_file": "/no/such/folder/events.jsonl"},
            "acme.events_file: expected a file in an existing folder the gateway may write to",
        ),
    ],
)
def test_a_bad_setting_stops_start_up(gateway_make_app, settings, message):
    with pytest.raises(ConfigError) as info:
        gateway_make_app(**settings)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_plugin_stays_off_unless_named(gateway_make_app, gateway_sign_in):
    # Installed but not in gateway.plugins: its keys are left alone and its policy does not run.
    app = gateway_make_app(**{"gateway.plugins": "entra sqlstore", "attributes.transforms": None})
    gateway_sign_in("cal@contractors.acme.example", app=app, groups=())
