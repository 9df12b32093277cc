"""saml_requests.kind: LogoutRequest ids are kept next to AuthnRequest ids

A LogoutResponse is accepted only when its InResponseTo names a
LogoutRequest that this gateway sent for the same browser, just as a
Response must answer an AuthnRequest of that browser. Both live in
``saml_requests``; ``kind`` keeps one from answering the other.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("saml_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="authn"))


def downgrade():
    with op.batch_alter_table("saml_requests", schema=None) as batch_op:
        batch_op.drop_column("kind")
