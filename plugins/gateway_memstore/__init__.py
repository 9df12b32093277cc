"""In-memory SCIM storage (``scim.storage = memstore``): the second backend that proves the storage boundary.

Enabled by naming ``memstore`` in ``gateway.plugins``. Users and groups live
in this process's memory, outside the gateway's tables, and are lost when it
stops: for tests and for trying the gateway out, never for production (each
worker process would hold a directory of its own). The core mirrors every
write into its own tables (:mod:`gateway.scim.directory`), so sign-in,
deactivation, forward-auth and the console work as with ``sqlstore``. See
:mod:`gateway_memstore.store`.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import StorageBackend


def _factory(registry):
    from .store import MemoryStorage

    return MemoryStorage()


@hookimpl(trylast=True)
def gateway_scim_storage_backends():
    return [StorageBackend(name="memstore", factory=_factory)]
