"""SQL storage for SCIM users and groups (``scim.storage = sqlstore``), on SQLAlchemy.

Enabled by naming ``sqlstore`` in ``gateway.plugins``; it stores SCIM data
in the gateway's own database (SQLite or PostgreSQL), inside each request's
transaction. See :mod:`gateway_sqlstore.store`.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import StorageBackend


def _factory(registry):
    from .store import SqlStorage

    return SqlStorage(registry)


@hookimpl(trylast=True)
def gateway_scim_storage_backends():
    return [StorageBackend(name="sqlstore", factory=_factory)]
