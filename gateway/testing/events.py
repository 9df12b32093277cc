"""An event recorder: a plugin object that keeps every event an app fires."""

from __future__ import annotations

from gateway import hookimpl

from .app import registry_of


class EventRecorder:
    """Registered on an app with :meth:`attach`; keeps what the event hooks received.

    ``events``: the :class:`gateway.interfaces.UserEvent` objects of
    ``gateway_user_event`` (in the transaction, so also those of attempts
    later rolled back or retried); ``group_events``: the
    :class:`gateway.interfaces.GroupEvent` objects of ``gateway_group_event``;
    ``committed``: user and group events as ``gateway_event_committed``
    announced them, after their transaction committed.
    """

    def __init__(self):
        self.events: list = []
        self.group_events: list = []
        self.committed: list = []

    def attach(self, app) -> EventRecorder:
        registry_of(app).pm.register(self)
        return self

    @hookimpl
    def gateway_user_event(self, event):
        self.events.append(event)

    @hookimpl
    def gateway_group_event(self, event):
        self.group_events.append(event)

    @hookimpl
    def gateway_event_committed(self, event):
        self.committed.append(event)

    def types(self) -> list[str]:
        """The in-transaction user events' types, in the order they fired."""
        return [event.type for event in self.events]

    def committed_types(self) -> list[str]:
        """The committed events' types (a group event's prefixed ``group.``), in order."""
        return [("group." if hasattr(e, "group_id") else "") + e.type for e in self.committed]

    def clear(self) -> None:
        self.events.clear()
        self.group_events.clear()
        self.committed.clear()
