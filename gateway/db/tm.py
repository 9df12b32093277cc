"""zope.sqlalchemy's session listeners, registered once per session factory.

``zope.sqlalchemy.register(session, transaction_manager=request.tm)`` adds
seven event listeners to every request's new session, which costs about as
much as a short SCIM write (SQLAlchemy's event registry is built for
listeners added once). :func:`register_once` adds seven small listeners once
to the factory instead; each session carries, in ``session.info``, its own
``zope.sqlalchemy.ZopeTransactionEvents`` (put there by :func:`join`), and the
listeners hand every event to it. So the joining, the "changed" marking and
the commit guard are zope.sqlalchemy's own, through its public class. A
session of the factory without one is a plain session that nothing joins to
a transaction.
"""

from __future__ import annotations

import functools
import inspect
import re

import zope.sqlalchemy
from sqlalchemy import event
from sqlalchemy.orm import Session
from zope.sqlalchemy import ZopeTransactionEvents

#: ``session.info`` key of the session's transaction manager.
TM_KEY = "gateway.transaction_manager"
#: ``session.info`` key of the session's ``ZopeTransactionEvents``.
EVENTS_KEY = "gateway.transaction_events"
_REGISTERED = "gateway_tm_events"

#: The session events zope.sqlalchemy.register listens to, by the method that takes each.
SESSION_EVENTS = (
    "after_begin",
    "after_attach",
    "after_flush",
    "after_bulk_update",
    "after_bulk_delete",
    "before_commit",
    "do_orm_execute",
)


def join(info: dict, transaction_manager) -> dict:
    """``info`` for a new session of a registered factory, joined to ``transaction_manager``."""
    info[TM_KEY] = transaction_manager
    info[EVENTS_KEY] = ZopeTransactionEvents(transaction_manager=transaction_manager)
    return info


def _session_events(session) -> ZopeTransactionEvents | None:
    return session.info.get(EVENTS_KEY)


def _relay(name: str):
    # The session is the first argument, or an attribute of it (bulk and ORM execute contexts).
    if name in ("after_bulk_update", "after_bulk_delete", "do_orm_execute"):

        def listener(context):
            ext = _session_events(context.session)
            if ext is not None:
                getattr(ext, name)(context)
    else:

        def listener(session, *args):
            ext = _session_events(session)
            if ext is not None:
                getattr(ext, name)(session, *args)

    listener.__name__ = name
    return listener


@functools.cache
def check_seam() -> None:
    """Fail at start when ``zope.sqlalchemy.register`` listens to other events
    than the ones relayed here (a listener it added would be silently missing)."""
    source = inspect.getsource(zope.sqlalchemy.register)
    found = tuple(re.findall(r"""event\.listen\(\s*session\s*,\s*["'](\w+)["']""", source))
    if sorted(found) != sorted(SESSION_EVENTS):
        raise RuntimeError(
            f"zope.sqlalchemy changed register(): it listens to {found}, gateway.db.tm relays {SESSION_EVENTS}"
        )


def register_once(session_factory) -> None:
    """Add the listeners to ``session_factory`` (a sessionmaker)."""
    check_seam()
    for name in SESSION_EVENTS:
        event.listen(session_factory, name, _relay(name))
    setattr(session_factory, _REGISTERED, True)


def is_registered(session_factory) -> bool:
    return getattr(session_factory, _REGISTERED, False)


def mark_changed(session: Session) -> None:
    """Tell the session's transaction that it wrote (statements run outside the ORM),
    so it commits rather than rolls back as read-only; nothing for a plain session."""
    ext = _session_events(session)
    if ext is not None:
        ext.mark_changed(session)


def transaction_manager(session: Session):
    """The transaction manager ``session`` is joined to, or None for a plain session."""
    return session.info.get(TM_KEY)
