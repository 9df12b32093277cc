"""admin console: admin grants that survive group syncs; indexes for the user search

- ``users.admin_granted_by``: who made the user an admin whatever their
  groups (``gateway CONFIG users grant-admin``, or the console). ``is_admin``
  alone would be undone by the next sign-in or admin-group write, which
  recompute it from the groups.
- The console's user search (gateway/admin/search.py) matches prefixes of
  the userName, the email and the display name, ordered by userName, by
  byte-wise ranges. On PostgreSQL those need indexes in the "C" collation:
  the existing ones are in the database's collation, where neither a prefix
  range nor its order can use them. SQLite's default collation is already
  byte-wise, so it needs only the display-name expression index.
- ``audit_events.correlation_id`` indexed: the console's audit page finds
  the events of one request (the reference a page or a log line shows).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: (index name, the indexed expression on PostgreSQL)
#: The email and display-name indexes carry the userName (and the display name
#: the expression reads), so a search reads its matches from the index alone.
POSTGRES_INDEXES = (
    ("ix_users_user_name_key_c", 'users (user_name_key COLLATE "C")'),
    ("ix_users_email_key_c", 'users (email_key COLLATE "C") INCLUDE (user_name_key)'),
    (
        "ix_users_display_name_lower_c",
        'users ((lower(display_name)) COLLATE "C") INCLUDE (user_name_key, display_name)',
    ),
)


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin_granted_by", sa.String(length=256), nullable=True))
    op.create_index("ix_audit_events_correlation_id", "audit_events", ["correlation_id"])
    if op.get_bind().dialect.name == "postgresql":
        for name, expression in POSTGRES_INDEXES:
            op.execute(f"CREATE INDEX {name} ON {expression}")
    else:
        op.execute("CREATE INDEX ix_users_display_name_lower ON users (lower(display_name))")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for name, _ in POSTGRES_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    else:
        op.execute("DROP INDEX IF EXISTS ix_users_display_name_lower")
    op.drop_index("ix_audit_events_correlation_id", table_name="audit_events")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("admin_granted_by")
