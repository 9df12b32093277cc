"""admin console: sign-in traces, the provisioning log, test sign-ins

- ``signin_traces``: every refused sign-in and every test sign-in, found by
  the reference (correlation id) the refusal page shows.
- ``provisioning_log``: every SCIM request (no bodies unless asked, never a
  secret); ``at`` serves the time filter and the retention delete,
  ``resource_id`` a user's page.
- ``signin_tests``: test sign-ins started and one-time test links.
- ``scim_tokens.last_used_address``: where a token was last used from.
- ``sessions.created_at`` indexed: the dashboard counts the last day's sign-ins.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade():
    op.create_table(
        "signin_traces",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("path", sa.String(length=256), nullable=True),
        sa.Column("issuer", sa.String(length=1024), nullable=True),
        sa.Column("name_id", sa.String(length=512), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("user_name", sa.String(length=256), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("started_by", sa.String(length=256), nullable=True),
        sa.Column("response_xml", sa.Text(), nullable=True),
        sa.Column("report", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_traces")),
    )
    with op.batch_alter_table("signin_traces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signin_traces_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_signin_traces_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_signin_traces_user_id"), ["user_id"], unique=False)

    op.create_table(
        "provisioning_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("token_name", sa.String(length=128), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("scim_type", sa.String(length=32), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=16), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("resource_name", sa.String(length=256), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("body", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_log")),
    )
    with op.batch_alter_table("provisioning_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_provisioning_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_provisioning_log_resource_id"), ["resource_id"], unique=False)

    op.create_table(
        "signin_tests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("link_hash", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("trace_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_tests")),
        sa.UniqueConstraint("link_hash", name=op.f("uq_signin_tests_link_hash")),
        sa.UniqueConstraint("request_id", name=op.f("uq_signin_tests_request_id")),
    )
    with op.batch_alter_table("signin_tests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signin_tests_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("scim_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_address", sa.String(length=64), nullable=True))

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_created_at"), ["created_at"], unique=False)


def downgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_created_at"))
    with op.batch_alter_table("scim_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_address")
    op.drop_table("signin_tests")
    op.drop_table("provisioning_log")
    op.drop_table("signin_traces")
