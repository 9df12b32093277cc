"""Acme's plugin for the identity gateway (entry point ``acme``).

One plugin, four parts, each in its own module:

- :mod:`.policy`: contractors (people at ``acme.contractor_domains``) sign
  in only as members of a group in ``acme.approved_groups``;
- :mod:`.levels`: the ``acme_level`` transform, a custom attribute ``level``
  derived from the job title;
- :mod:`.events`: every committed change as one JSON line in
  ``acme.events_file``;
- :mod:`.settings`: the ``acme.*`` keys, declared so the gateway checks them
  at start-up like its own.

The gateway registers this module, so the hook implementations are imported
here: pluggy finds a plugin's hooks among the module's attributes.
"""

from __future__ import annotations

from .events import gateway_event_committed
from .levels import gateway_attribute_transforms
from .policy import gateway_provisioning_decide
from .settings import gateway_plugin_settings

__all__ = [
    "gateway_attribute_transforms",
    "gateway_event_committed",
    "gateway_plugin_settings",
    "gateway_provisioning_decide",
]
