"""PostgreSQL: an UPDATE of ``users`` notifies gateway_identity only when it sets a column an identity shows

Every sign-in updates the user's ``last_sign_in_at`` and ``updated_at``.
Each such UPDATE notified ``gateway_identity``, which woke the listener
thread of every gateway process and emptied its identity cache
(forward-auth's), for a change no signed-in identity shows. The trigger now
fires for an UPDATE that sets one of :data:`IDENTITY_COLUMNS` (the user
columns ``gateway/sessions.py`` reads into an identity, and ``active``,
which decides whether there is one), and for DELETE and TRUNCATE as before.
``UPDATE OF`` looks at the columns the statement sets, whatever their new
values: the ORM sets only the columns that changed.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: The user columns an identity shows or depends on (tests/test_identity_cache.py keeps it true).
IDENTITY_COLUMNS = (
    "id",
    "user_name",
    "email",
    "display_name",
    "given_name",
    "family_name",
    "title",
    "department",
    "is_admin",
    "attributes",
    "active",
)


def _trigger(events: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS users_notify_identity ON users")
    op.execute(
        f"CREATE TRIGGER users_notify_identity AFTER {events} ON users"
        " FOR EACH STATEMENT EXECUTE FUNCTION gateway_notify_identity()"
    )


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    _trigger(f"UPDATE OF {', '.join(IDENTITY_COLUMNS)} OR DELETE OR TRUNCATE")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    _trigger("UPDATE OR DELETE OR TRUNCATE")
