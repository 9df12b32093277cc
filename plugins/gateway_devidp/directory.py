"""The development IdP's groups, named in the gateway as Entra's SCIM would name them.

Entra's groups claim carries group object ids, never names; in production
the names arrive with SCIM provisioning (or the admin lists object ids in
``gateway.admin_groups``). Development has no SCIM client, so before a
sign-in the development IdP creates each group it is about to put in the
claim under its display name, with the object id as external id: the
sign-in then finds "Gateway Admins" by that id, and development.ini's
``gateway.admin_groups = "Gateway Admins"`` makes Alice an admin.
"""

from __future__ import annotations

import sqlalchemy as sa
import zope.sqlalchemy
from sqlalchemy.dialects import postgresql, sqlite

from gateway.db.models import Group, new_id, utcnow

from .idp import object_id


def name_groups(dbsession, names) -> None:
    """Create the groups ``names`` that no group has yet (by object id or by name)."""
    wanted = {object_id("group", name): name for name in names}
    if not wanted:
        return
    rows = dbsession.execute(
        sa.select(Group.external_id, Group.display_name_key).where(
            sa.or_(Group.external_id.in_(wanted), Group.display_name_key.in_([n.lower() for n in wanted.values()]))
        )
    ).all()
    ids = {row.external_id for row in rows}
    keys = {row.display_name_key for row in rows}
    missing = [(oid, name) for oid, name in wanted.items() if oid not in ids and name.lower() not in keys]
    if not missing:
        return
    now = utcnow()
    insert = (postgresql if dbsession.get_bind().dialect.name == "postgresql" else sqlite).insert(Group)
    dbsession.execute(
        insert.values(
            [
                {
                    "id": new_id(),
                    "display_name": name,
                    "display_name_key": name.lower(),
                    "external_id": oid,
                    "scim_data": {"displayName": name, "externalId": oid},
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for oid, name in missing
            ]
        ).on_conflict_do_nothing()
    )
    zope.sqlalchemy.mark_changed(dbsession)
