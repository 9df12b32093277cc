"""Provisioning: who may sign in or be created, and how profiles are kept in sync.

- ``policy``: the shipped ``gateway_provisioning_decide`` (``provisioning.mode``).
- ``signin``: a verified SAML sign-in to a user (find, decide, create, sync, events).
- ``profile``: the one mapped profile from SAML claims and SCIM data, with transforms.
- ``groups``: memberships from the ``groups`` claim, admins from ``gateway.admin_groups``.

What the SCIM service calls lives here too (``scim_enabled``,
``sync_profile_from_scim``, ``refresh_admins_after_group_write``), so that
both halves keep one definition of a profile.
"""

from __future__ import annotations

from .groups import refresh_admins_after_group_write, scim_enabled
from .policy import SCIM_DISABLED
from .profile import sync_profile_from_scim

__all__ = ["SCIM_DISABLED", "refresh_admins_after_group_write", "scim_enabled", "sync_profile_from_scim"]


def includeme(config):
    from .profile import build_transforms

    # Resolved once: a name in attributes.transforms that no enabled plugin
    # registers stops start-up here, naming the setting.
    config.registry.attribute_transforms = build_transforms(config.registry)
