"""users.saml_profile: the profile the last SAML sign-in carried

The mapped profile (the users columns) merges two sources: the SCIM resource
(``scim_data``) and the SAML claims. Keeping the claims of the last sign-in
lets a SCIM write recompute the mapped profile without waiting for the next
sign-in, whichever source ``attributes.authority`` makes win.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "saml_profile",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("saml_profile")
