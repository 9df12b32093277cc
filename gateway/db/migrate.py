"""Run and inspect Alembic migrations for the gateway's database."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

#: Indexes the migrations create that the models do not declare: expressions
#: in the "C" collation on PostgreSQL, per dialect (migration 0010, the
#: console's user search), which Alembic's comparison would read as drift.
UNMODELLED_INDEXES = frozenset(
    {"ix_users_user_name_key_c", "ix_users_email_key_c", "ix_users_display_name_lower_c", "ix_users_display_name_lower"}
)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's filter for autogenerate and the schema test: skip :data:`UNMODELLED_INDEXES`."""
    return not (type_ == "index" and name in UNMODELLED_INDEXES)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
