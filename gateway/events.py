"""Firing events: in the change's transaction, and once more after it commits.

Each change fires its in-transaction hook (``gateway_user_event`` or
``gateway_group_event``) at once, so a plugin may write in the same
transaction, and queues ``gateway_event_committed`` on the transaction
with ``transaction``'s public ``addAfterCommitHook``: it runs only when that
transaction commits. An aborted attempt (an error, a refusal, an attempt that
pyramid_retry retries) drops its queued events with it, and the retried
attempt queues its own, so each committed change is announced exactly once.

``denied`` is the exception: a refusal changes nothing, and the request that
carries it may well be rolled back (a SCIM refusal is an error answer), so it
is announced when its transaction ends, committed or aborted. A refusal is
decided before anything retryable can happen in its attempt. A ``denied``
that did change something (``changed == ("sessions",)``: a SCIM write the
policy now refuses ended the person's sessions) is a change like any other,
announced only after its commit.
"""

from __future__ import annotations

import logging

from .interfaces import GroupEvent, HookContext, UserEvent

log = logging.getLogger(__name__)


def fire_user(context: HookContext, event: UserEvent) -> None:
    context.registry.pm.hook.gateway_user_event(context=context, event=event)
    after_commit(context, event)


def fire_group(context: HookContext, event: GroupEvent) -> None:
    context.registry.pm.hook.gateway_group_event(context=context, event=event)
    after_commit(context, event)


def after_commit(context: HookContext, event: UserEvent | GroupEvent) -> None:
    """Queue ``gateway_event_committed(context, event)`` for when the change's transaction commits."""
    hook = context.registry.pm.hook.gateway_event_committed
    if not hook.get_hookimpls():
        return  # nobody listens: no work per change
    # After the commit the session is closed: the context keeps no session.
    committed = HookContext(context.registry, None, context.request)

    def announce(success: bool) -> None:
        if success:
            hook(context=committed, event=event)

    manager = _transaction_manager(context)
    if manager is not None:
        current = manager.get()
        current.addAfterCommitHook(announce)
        if event.type == "denied" and not event.changed:
            current.addAfterAbortHook(announce, args=(True,))
    elif context.dbsession is not None:
        # A plain SQLAlchemy session (no transaction manager): its own commit.
        import sqlalchemy as sa

        sa.event.listen(context.dbsession, "after_commit", lambda _session: announce(True), once=True)
    else:  # pragma: no cover - every caller changes something in a transaction
        log.warning("%s event of %s fired outside a transaction: not announced after commit", event.type, event)


def _transaction_manager(context: HookContext):
    from .db.tm import TM_KEY

    if context.dbsession is not None and context.dbsession.info.get(TM_KEY) is not None:
        return context.dbsession.info[TM_KEY]
    request = context.request
    if request is not None and context.dbsession is getattr(request, "dbsession", None):
        return request.tm
    return None
