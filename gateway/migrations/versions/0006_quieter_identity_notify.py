"""PostgreSQL: NOTIFY gateway_identity only for changes a signed-in identity can show

A signed-in identity (gateway/sessions.py) carries its groups' display names
and external ids. An Entra sync fills groups with member PATCHes, and each
one sent two notifications (the membership rows, the group's version bump);
each made every gateway process drop its identity cache and woke a listener
thread in each of them, hundreds of times a second, for users nobody was
signed in as. Now:

- ``groups``: only UPDATEs that set ``display_name`` or ``external_id``
  notify (and DELETE, TRUNCATE), not the version bump.
- ``group_members``: an INSERT or DELETE notifies only when one of the users
  it touches has a live session. Rows removed together with their group or
  user are left to that DELETE's own notification. Race-free with a sign-in
  in progress: the trigger first takes a shared advisory lock per user
  (``gateway.identity_cache.IDENTITY_LOCK_CLASS``, the user id hashed), and a
  sign-in holds that user's lock exclusively from just before it creates the
  session until it commits (``gateway.sessions.start_session``). Either the
  sign-in commits first and the trigger, waiting on the lock, then sees its
  session; or the trigger locks first and the sign-in commits after this
  change, so an identity read after that sign-in includes it. Advisory locks
  meet no row lock, so user updates and deletes do not wait on them. Locks
  are a shared, bounded resource (PostgreSQL plans for
  ``max_locks_per_transaction``, 64 by default): a transaction that would
  hold more than 64 of them notifies without looking instead. UPDATE and
  TRUNCATE always notify.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_STATEMENT = " FOR EACH STATEMENT EXECUTE FUNCTION "


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION gateway_notify_membership() RETURNS trigger AS $$
        DECLARE
            touched text[];
            locked int;
        BEGIN
            -- changed_rows: the rows inserted or deleted (each trigger names its
            -- transition table so). Rows whose group or user went with them are
            -- announced by that DELETE's own trigger.
            SELECT array_agg(DISTINCT c.user_id ORDER BY c.user_id) INTO touched
              FROM changed_rows c
              JOIN groups g ON g.id = c.group_id
              JOIN users u ON u.id = c.user_id;
            IF touched IS NULL THEN
                RETURN NULL;
            END IF;
            -- Identity locks this transaction holds already (a setting local to it).
            locked := coalesce(nullif(current_setting('gateway.identity_locks', true), ''), '0')::int;
            IF locked + cardinality(touched) <= 64 THEN
                PERFORM set_config('gateway.identity_locks', (locked + cardinality(touched))::text, true);
                -- 7201: gateway.identity_cache.IDENTITY_LOCK_CLASS
                PERFORM pg_advisory_xact_lock_shared(7201, hashtext(id)) FROM unnest(touched) AS id;
                IF NOT EXISTS (
                    SELECT 1 FROM sessions s
                     WHERE s.user_id = ANY (touched) AND s.ended_at IS NULL
                       AND s.expires_at > timezone('utc', now()) - interval '1 hour'  -- a margin for clock skew
                ) THEN
                    RETURN NULL;
                END IF;
            END IF;
            PERFORM pg_notify('gateway_identity', TG_TABLE_NAME);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute("DROP TRIGGER IF EXISTS group_members_notify_identity ON group_members")
    # A trigger with a transition table takes one event.
    op.execute(
        "CREATE TRIGGER group_members_added_notify_identity AFTER INSERT ON group_members"
        " REFERENCING NEW TABLE AS changed_rows" + _STATEMENT + "gateway_notify_membership()"
    )
    op.execute(
        "CREATE TRIGGER group_members_removed_notify_identity AFTER DELETE ON group_members"
        " REFERENCING OLD TABLE AS changed_rows" + _STATEMENT + "gateway_notify_membership()"
    )
    op.execute(
        "CREATE TRIGGER group_members_notify_identity AFTER UPDATE OR TRUNCATE ON group_members"
        + _STATEMENT
        + "gateway_notify_identity()"
    )
    op.execute("DROP TRIGGER IF EXISTS groups_notify_identity ON groups")
    op.execute(
        "CREATE TRIGGER groups_notify_identity AFTER UPDATE OF display_name, external_id OR DELETE OR TRUNCATE ON groups"
        + _STATEMENT
        + "gateway_notify_identity()"
    )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for trigger in (
        "group_members_added_notify_identity",
        "group_members_removed_notify_identity",
        "group_members_notify_identity",
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON group_members")
    op.execute("DROP FUNCTION IF EXISTS gateway_notify_membership()")
    op.execute(
        "CREATE TRIGGER group_members_notify_identity AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON group_members"
        + _STATEMENT
        + "gateway_notify_identity()"
    )
    op.execute("DROP TRIGGER IF EXISTS groups_notify_identity ON groups")
    op.execute(
        "CREATE TRIGGER groups_notify_identity AFTER UPDATE OR DELETE OR TRUNCATE ON groups"
        + _STATEMENT
        + "gateway_notify_identity()"
    )
