"""An event recorder: a plugin object that keeps every user event an app fires."""

from __future__ import annotations

from gateway import hookimpl

from .app import registry_of


class EventRecorder:
    """Registered on an app with :meth:`attach`; ``events`` holds what ``gateway_user_event`` received.

    Each entry is the :class:`gateway.interfaces.UserEvent` itself; read its
    fields (``type``, ``user_name``, ``changed``, ``reason``, ...) in the test.
    """

    def __init__(self):
        self.events: list = []

    def attach(self, app) -> "EventRecorder":
        registry_of(app).pm.register(self)
        return self

    @hookimpl
    def gateway_user_event(self, event):
        self.events.append(event)

    def types(self) -> list[str]:
        """The events' types in the order they fired."""
        return [event.type for event in self.events]

    def clear(self) -> None:
        self.events.clear()
