"""zope.sqlalchemy's session listeners, registered once per session factory.

``zope.sqlalchemy.register(session, transaction_manager=request.tm)`` adds
seven event listeners to every request's new session, which costs more than
a whole SCIM write (SQLAlchemy's event registry is built for listeners added
once). :func:`register_once` adds the same listeners once to the factory;
each session finds its transaction manager in ``session.info`` (put there by
:func:`gateway.db.get_tm_session`). A session of the factory without one is
a plain session that nothing joins to a transaction, as before.
"""

from __future__ import annotations

from sqlalchemy import event
from transaction._transaction import Status
from zope.sqlalchemy.datamanager import ZopeTransactionEvents, join_transaction, mark_changed

#: ``session.info`` key of the session's transaction manager.
TM_KEY = "gateway.transaction_manager"
_REGISTERED = "_gateway_tm_events"


class PerSessionTransactionEvents(ZopeTransactionEvents):
    """ZopeTransactionEvents, with the transaction manager read from each session."""

    def after_begin(self, session, transaction, connection):
        tm = session.info.get(TM_KEY)
        if tm is not None:
            join_transaction(session, self.initial_state, tm, self.keep_session)

    def after_attach(self, session, instance):
        tm = session.info.get(TM_KEY)
        if tm is not None:
            join_transaction(session, self.initial_state, tm, self.keep_session)

    def after_flush(self, session, flush_context):
        tm = session.info.get(TM_KEY)
        if tm is not None:
            mark_changed(session, tm, self.keep_session)

    def after_bulk_update(self, update_context):
        self.after_flush(update_context.session, None)

    def after_bulk_delete(self, delete_context):
        self.after_flush(delete_context.session, None)

    def before_commit(self, session):
        tm = session.info.get(TM_KEY)
        if tm is not None:
            assert (
                session.in_nested_transaction() or tm.get().status == Status.COMMITTING
            ), "Transaction must be committed using the transaction manager"

    def do_orm_execute(self, execute_state):
        tm = execute_state.session.info.get(TM_KEY)
        if tm is not None and execute_state.is_orm_statement and (
            execute_state.is_update or execute_state.is_insert or execute_state.is_delete
        ):
            mark_changed(execute_state.session, tm, self.keep_session)


def register_once(session_factory) -> None:
    """Add the listeners to ``session_factory`` (a sessionmaker)."""
    ext = PerSessionTransactionEvents()
    for name in ("after_begin", "after_attach", "after_flush", "after_bulk_update", "after_bulk_delete",
                 "before_commit", "do_orm_execute"):
        event.listen(session_factory, name, getattr(ext, name))
    setattr(session_factory, _REGISTERED, True)


def is_registered(session_factory) -> bool:
    return getattr(session_factory, _REGISTERED, False)
