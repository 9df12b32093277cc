"""Migrated temporary databases: a SQLite template to copy per test, or a PostgreSQL schema."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def migrated_sqlite(path: Path) -> Path:
    """Create and migrate a SQLite database at ``path``, checkpointed into that one file (so a copy is whole)."""
    from gateway.db import create_engine, migrate

    engine = create_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return Path(path)


def sqlite_copy(template: Path, path: Path) -> str:
    """A copy of a migrated template at ``path``; its SQLAlchemy URL."""
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def truncate_all(url: str) -> None:
    """Empty every gateway table of the PostgreSQL database (or schema) at ``url``."""
    import sqlalchemy as sa

    from gateway.db.models import Base

    engine = sa.create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


class PostgresSchema:
    """A migrated schema of its own on a PostgreSQL server, dropped by :meth:`drop`.

    ``url`` reaches the schema (``search_path`` set through the connection
    options), so several test processes share one server without meeting.
    """

    def __init__(self, server_url: str, name: str | None = None):
        import sqlalchemy as sa

        from gateway.db import create_engine, migrate

        self.server_url = server_url
        self.name = name or f"gw_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{self.name}"'))
        finally:
            admin.dispose()
        separator = "&" if "?" in server_url else "?"
        self.url = f"{server_url}{separator}options=-csearch_path%3D{self.name}"
        engine = create_engine(self.url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()

    def truncate(self) -> None:
        truncate_all(self.url)

    def drop(self) -> None:
        import sqlalchemy as sa

        admin = sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{self.name}" CASCADE'))
        finally:
            admin.dispose()
