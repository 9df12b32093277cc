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

Hooks that act within a request or a change receive ``context``, a
:class:`gateway.interfaces.HookContext` (``registry``, ``dbsession``,
``request`` or None, ``settings``, ``ini``), never thread-locals. As pluggy
allows, an implementation takes only the arguments it names, so
``def gateway_user_event(event)`` is as valid as
``def gateway_user_event(context, event)``.
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
def gateway_plugin_settings():
    """Declare the settings of your plugin.

    Return a list of :class:`gateway.interfaces.PluginSetting` (name, parser,
    default, help). Called once at start-up, before
    :func:`gateway_pyramid_configure`. The prefixes of the declared names
    become the plugin's own: a key under one of them that no declaration
    names stops start-up (and ``gateway CONFIG check``) with a clear error,
    as a misspelt core key does; so does a missing required key or a value
    the parser refuses. The parsed values are in
    ``registry.plugin_settings`` (a dict by key; for a ``.*`` declaration,
    every such key present). A prefix of the core (``saml``, ``scim``, ...)
    or one declared by two plugins stops start-up.
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
def gateway_provisioning_decide(context, identity, user, source):
    """Decide whether a person may sign in, be created, be kept, or be refused.

    Called for every SAML sign-in (``source == "saml"``) before a user is
    signed in or created, by the admin console's test sign-in (which changes
    nothing), and over SCIM (``source == "scim"``): for every create; for a
    PUT or PATCH of a user that reactivates them, or that changes an
    attribute of their identity while they stay active; and, after a group
    change (members added or removed, a rename, a delete), for each active
    user it concerns. Never for a deactivation or a deletion. The SCIM
    questions after a create are asked only when a plugin besides the
    shipped default implements this hook.

    What ``deny`` does over SCIM: a create or a reactivation is refused
    (403, the reason as ``detail``, nothing written, a ``denied`` event);
    any other write is stored (the directory mirrors Entra) and the person's
    sessions end (a ``denied`` event with ``changed == ("sessions",)`` when
    there were any); their sign-ins are refused while the policy refuses
    them, so decide the same way at sign-in.

    ``context`` is the :class:`gateway.interfaces.HookContext` of the request:
    read your settings from ``context.registry`` (as your
    ``gateway_pyramid_configure`` stored them) or ``context.ini``, and query
    with ``context.dbsession`` (the request's transaction).

    ``identity`` is a :class:`gateway.interfaces.Identity`, the person after
    the change:

    - SAML: ``subject`` (the IdP profile's lasting claim, Entra's object id),
      ``user_name`` (the NameID), ``email``, ``groups`` (the groups claim,
      empty when Entra sent the overage link instead), ``issuer``, and
      ``profile``: the claims mapped by the profile's claim map
      (``display_name``, ``given_name``, ``family_name``, ``email``,
      ``title``, ``department``, ... as mapped), ``subject``, ``custom``
      (a dict) and ``groups_link`` on overage.
    - SCIM: ``subject`` and ``issuer`` None, ``user_name`` (userName),
      ``email`` (the primary email), ``profile`` with ``email``,
      ``given_name``, ``family_name``, ``display_name``, ``title``,
      ``department``, and ``groups``: empty for a create (memberships arrive
      later, through /Groups, and ask again), else the display names and
      external ids of the user's stored groups after the change.

    ``user`` is the stored user as a dict, as it was before the change, or
    None when nobody matches (always None for a SCIM create): ``id``,
    ``userName``, ``externalId``, ``idp_subject``, ``active`` (False over
    SCIM: the write reactivates them), ``email``, ``displayName``,
    ``givenName``, ``familyName``, ``title``, ``department``,
    ``provisioned_by`` (``scim``, or ``saml`` for a user created at their
    first sign-in) and ``groups`` (the display names and external ids of
    their stored groups). Compare it with ``identity`` to see what a SCIM
    change changed.

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
def gateway_user_event(context, event):
    """Observe a user lifecycle change.

    ``event`` is a :class:`gateway.interfaces.UserEvent`: ``type`` (created,
    updated, deactivated, reactivated, deleted, signed_in, signed_out,
    denied), ``user_id``, ``user_name``, ``actor``, ``source`` (``saml``,
    ``scim``, ``admin`` or ``cli``), ``correlation_id``, ``changed`` (the
    fields an ``updated`` event touched; ``("sessions",)`` for a ``denied``
    that ended the person's sessions) and ``reason`` (of a ``denied``).
    docs/plugins.md lists which change fires which event, by source.
    ``context`` is the :class:`gateway.interfaces.HookContext` of the change;
    ``context.request`` is None for a change made by the ``gateway`` CLI.

    Called inside the transaction after the change was made: write with
    ``context.dbsession`` to record it atomically. An exception aborts the
    change. It runs again if the request is retried, and for changes that are
    later rolled back: anything that leaves the database (a file, a webhook,
    a queue) belongs in :func:`gateway_event_committed`. Return value is
    ignored.
    """


@hookspec
def gateway_group_event(context, event):
    """Observe a group change: over SCIM, or by a sign-in's groups claim.

    ``event`` is a :class:`gateway.interfaces.GroupEvent`: ``type``
    (created, updated, deleted, members_added, members_removed),
    ``group_id``, ``display_name``, ``user_ids`` (the users added or
    removed), ``changed``, ``actor``, ``source`` and ``correlation_id``. A
    create or a PUT with members fires ``created`` or ``updated`` and then
    ``members_added`` / ``members_removed``. A SAML sign-in whose groups
    claim sets the user's memberships (a user created at first sign-in)
    fires ``created`` for each group it creates and ``members_added`` /
    ``members_removed`` naming the user (actor ``user:<userName>``, source
    ``saml``). The admin console changes no group. ``context`` and the
    transaction are as for :func:`gateway_user_event`. Return value is
    ignored.
    """


@hookspec
def gateway_event_committed(context, event):
    """Observe a change after its transaction committed.

    ``event`` is a :class:`gateway.interfaces.UserEvent` or
    :class:`gateway.interfaces.GroupEvent`, the same object the
    in-transaction hook saw. Called once per committed change, in the order
    the changes were made: never for a change that was rolled back, nor
    twice when pyramid_retry retried the request. The transaction is over:
    ``context.dbsession`` is None (open a session of your own from
    ``context.registry.dbsession_factory`` if you must read). Send to the
    outside world here: files, webhooks, queues. An exception is logged and
    does not change the answer to the request. Return value is ignored.
    """
