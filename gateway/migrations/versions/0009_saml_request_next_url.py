"""saml_requests.next_path holds a whole URL: up to 8,192 characters

A sign-in started by forward-auth comes back to the page of the app the
person asked for (``https://app.example.com/deep/page?x=1``), not only to a
path of the gateway; apps such as dashboards put long state in the query,
so the column grows from 2,048 characters to the 8,192 that nginx's default
request line allows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("saml_requests", schema=None) as batch_op:
        batch_op.alter_column(
            "next_path", existing_type=sa.String(length=2048), type_=sa.String(length=8192), existing_nullable=False
        )


def downgrade():
    # A sign-in in flight whose URL would not fit is dropped; its answer is then
    # refused like one to an unknown request, and the person signs in again.
    op.execute(sa.text("DELETE FROM saml_requests WHERE length(next_path) > 2048"))
    with op.batch_alter_table("saml_requests", schema=None) as batch_op:
        batch_op.alter_column(
            "next_path", existing_type=sa.String(length=8192), type_=sa.String(length=2048), existing_nullable=False
        )
