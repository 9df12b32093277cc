"""The gateway's test kit (``gateway.testing``, loaded by pytest through its
``pytest11`` entry point) gives every fixture; this file only enables the
plugin and its settings in the apps the kit builds."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def events_file(tmp_path):
    return tmp_path / "events.jsonl"


@pytest.fixture
def gateway_settings(gateway_settings, events_file):
    """The kit's smallest settings, with the acme plugin on."""
    gateway_settings.update(
        {
            "gateway.plugins": gateway_settings["gateway.plugins"] + " acme",
            "attributes.transforms": "acme_level",
            "acme.contractor_domains": "contractors.acme.example",
            "acme.approved_groups": '"Approved Contractors"',
            "acme.events_file": str(events_file),
        }
    )
    return gateway_settings


@pytest.fixture
def written(events_file):
    """``written()``: the events file's records so far."""

    def read() -> list[dict]:
        if not events_file.exists():
            return []
        return [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines()]

    return read
