"""Audit trail of user lifecycle events (entry point ``audit``).

Writes every ``gateway_user_event`` to the ``audit_events`` table through
:func:`gateway.audit.record`, in the request's transaction (so a change
that is rolled back leaves no row): action ``user.<type>``, the actor
(``user:<userName>``, ``idp`` for single logout, ``system``), the source and
the request's correlation id; ``changed`` and ``reason`` go in the details.

SCIM writes are the exception: the SCIM service records every one of them
itself (users, groups and tokens alike, actor ``scim:<token name>``, with the
changed attributes), whether this plugin is on or not, so an event whose
source is ``scim`` is not recorded a second time here. The same goes for the
admin console and the CLI (sources ``admin`` and ``cli``, gateway/admin/actions.py).
"""

from __future__ import annotations

from gateway import audit, hookimpl

#: Event sources whose changes are recorded where they are made.
SELF_RECORDED = frozenset({"scim", "admin", "cli"})


@hookimpl
def gateway_user_event(context, event):
    if event.source in SELF_RECORDED or context.dbsession is None:
        return
    details = {}
    if event.changed:
        details["changed"] = list(event.changed)
    if event.reason:
        details["reason"] = event.reason
    audit.record(
        context.dbsession,
        actor=event.actor,
        action=f"user.{event.type}",
        target_type="user",
        target_id=event.user_id,
        target_name=event.user_name,
        source=event.source,
        correlation_id=event.correlation_id,
        details=details,
    )
