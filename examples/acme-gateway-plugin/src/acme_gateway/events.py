"""Every committed change as one JSON line in ``acme.events_file``.

``gateway_event_committed`` runs after the change's transaction committed:
never for a change that was rolled back, and once when the gateway retried
the request, so the file holds what really happened. (The in-transaction
``gateway_user_event`` would also see attempts that are then undone.) A line
is written with one ``write`` in append mode, so the lines of several
threads or worker processes do not interleave.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

from gateway import hookimpl
from gateway.interfaces import GroupEvent

from .settings import EVENTS_FILE

_lock = threading.Lock()


def as_record(event) -> dict:
    """The JSON object of one event: user and group events share the common keys."""
    record = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "type": event.type,
        "actor": event.actor,
        "source": event.source,
        "correlation_id": event.correlation_id,
        "changed": list(event.changed),
    }
    if isinstance(event, GroupEvent):
        record.update(kind="group", id=event.group_id, name=event.display_name, user_ids=list(event.user_ids))
    else:
        record.update(kind="user", id=event.user_id, name=event.user_name, reason=event.reason)
    return record


@hookimpl
def gateway_event_committed(context, event):
    line = json.dumps(as_record(event), ensure_ascii=False, sort_keys=True) + "\n"
    with _lock, open(context.registry.plugin_settings[EVENTS_FILE], "a", encoding="utf-8") as out:
        out.write(line)
