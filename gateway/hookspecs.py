"""The gateway's plugin hooks: this file is the reference for extension authors.

A plugin is a module (or a package's top module) with functions named after
these hooks, each marked ``@hookimpl`` (``from gateway import hookimpl``). It
is switched on only by naming it in ``gateway.plugins``. Any function whose
name starts with ``gateway_`` but matches no hook below stops start-up, so a
typo is caught at once.

Registration hooks (``gateway_idp_profiles``, ``gateway_scim_storage_backends``,
``gateway_attribute_transforms``) return lists of named descriptors; the core
picks by the names the ini gives, in the order the ini gives them, so the
order plugins are loaded in never matters. Decision hooks are ``firstresult``.
Shipped defaults are ``trylast`` so a site plugin answers before them.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gateway")


@hookspec
def gateway_pyramid_configure(config):
    """Add routes, views, templates or tweens to the Pyramid app.

    Called once at start-up, after the core has added its own routes, with the
    :class:`pyramid.config.Configurator`. Use ``config.add_route``,
    ``config.add_view``, ``config.include(...)`` as in any Pyramid app. The
    parsed core settings are ``config.registry.gateway_settings``; the raw ini
    settings (for keys under your plugin's own prefix) are
    ``config.registry.settings``. Raise :class:`gateway.ConfigError` for a bad
    setting of yours. Return value is ignored.

    Forward-auth answers allowed ``GET /auth`` checks of identities in memory
    before Pyramid; adding a tween, an event subscriber or a view deriver, or
    replacing the ``/auth`` view, the security or execution policy or the
    request factory here turns that off, so yours sees every request (at some
    cost in forward-auth throughput).
    """


@hookspec
def gateway_idp_profiles():
    """Register identity provider profiles.

    Return a list of :class:`gateway.interfaces.IdpProfile`. The ini picks one
    by name with ``saml.idp_profile`` (default ``entra``); a name no enabled
    plugin registers stops start-up. Two plugins registering the same name
    stop start-up too.
    """


@hookspec(firstresult=True)
def gateway_provisioning_decide(identity, user, source):
    """Decide whether a person may sign in, be created, or be refused.

    Called for every SAML sign-in (``source == "saml"``) before a user is
    signed in or created, and for every SCIM create (``source == "scim"``).
    ``identity`` is a :class:`gateway.interfaces.Identity`; ``user`` is the
    matching stored user as a dict (``id``, ``userName``, ``active``,
    ``provisioned_by``, ...) or None when nobody matches.

    Return a :class:`gateway.interfaces.Decision`: ``allow``, ``create`` or
    ``deny(reason)``; the reason is shown to the person (SAML) or returned as
    the SCIM error detail. Return None to let the next plugin decide. Stops at
    first non-None result; the shipped default (trylast) follows
    ``provisioning.mode``.
    """


@hookspec
def gateway_scim_storage_backends():
    """Register SCIM storage backends.

    Return a list of :class:`gateway.interfaces.StorageBackend`. The ini
    picks one by name with ``scim.storage`` (default ``sqlstore``). The core
    reaches SCIM data only through the chosen backend's methods, as defined by
    :class:`gateway.scim.storage.ScimStorage`.
    """


@hookspec
def gateway_attribute_transforms():
    """Register named attribute transforms.

    Return a list of :class:`gateway.interfaces.AttributeTransform`. The core
    applies those named in ``attributes.transforms``, in that order, to every
    profile update from SAML or SCIM; a listed name nobody registers stops
    start-up.
    """


@hookspec
def gateway_user_event(event):
    """Observe a user lifecycle change.

    ``event`` is a :class:`gateway.interfaces.UserEvent` whose ``type`` is one
    of created, updated, deactivated, reactivated, deleted, signed_in,
    signed_out, denied. Called inside the request's transaction after the
    change was made: write to ``event.dbsession`` to record it atomically, or
    hand it to a queue. An exception aborts the change. Return value is
    ignored.
    """
