"""PostgreSQL: NOTIFY gateway_identity whenever who-is-signed-in-as-what (or a SCIM token) may have changed

Every gateway process keeps signed-in identities in memory for forward-auth
and drops them when this notification arrives (gateway/identity_cache.py).
Triggers, rather than application code, send it, so no write path (SCIM, a
sign-out, the CLI, a manual UPDATE) can forget to. SQLite needs nothing: the
cache there watches PRAGMA data_version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: table -> the statements after which cached identities may be wrong.
WATCHED = {
    "sessions": "UPDATE OR DELETE OR TRUNCATE",
    "users": "UPDATE OR DELETE OR TRUNCATE",
    "groups": "UPDATE OR DELETE OR TRUNCATE",
    "group_members": "INSERT OR UPDATE OR DELETE OR TRUNCATE",
    # SCIM bearer tokens: a revocation must reach every instance's token cache.
    "scim_tokens": "UPDATE OR DELETE OR TRUNCATE",
}


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION gateway_notify_identity() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('gateway_identity', TG_TABLE_NAME);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    for table, events in WATCHED.items():
        op.execute(
            f"CREATE TRIGGER {table}_notify_identity AFTER {events} ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION gateway_notify_identity()"
        )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_identity ON {table}")
    op.execute("DROP FUNCTION IF EXISTS gateway_notify_identity()")
