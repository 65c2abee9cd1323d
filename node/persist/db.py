"""Engine and sessions for SQLite (embedded default) or PostgreSQL (shared by several nodes).

The schema is created and changed only by the Alembic migrations in migrations/; `upgrade`
runs them, and every process of the node calls it at start so a fresh machine needs no step.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database cannot be reached or written; the caller answers with a resource failure."""


def make_engine(url: str) -> Engine:
    """An engine tuned for several processes writing at once."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            _create_private_file(Path(database))
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


def _create_private_file(path: Path) -> None:
    """The mapping database is the key to re-identification: owner-only from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a job row acknowledged to a sender survives power loss
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Any fixed number: the PostgreSQL advisory lock that lets one node at a time migrate.
MIGRATION_LOCK = 0x6465_6964  # "deid"


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (idempotent, and safe when nodes start together)."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def _lock_for_migration(connection: Connection) -> None:
    """Nodes sharing a database may start at the same moment: the first migrates inside this
    lock, the others wait for it and then find the schema at head. Held until commit."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the database's one write lock, taken now


def check(url: str) -> None:
    """Raise (alembic CommandError) unless the database is at head and the models match the migrations."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.check(config)
    finally:
        engine.dispose()


def insert_ignoring_conflicts(
    executor: Session | Connection, table: Any, rows: Sequence[dict[str, Any]], unique: Iterable[str] | None
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: get-or-create that two processes can race safely.

    `unique` names the constraint whose conflicts are expected; None ignores a conflict on any
    unique constraint (the caller reads back and decides). The rows go as parameters of one
    statement built once per table (executemany), not as a statement built per call.
    """
    if not rows:
        return
    dialect = executor.dialect if isinstance(executor, Connection) else executor.get_bind().dialect
    statement = _insert_ignoring(dialect.name, table.__table__, tuple(unique) if unique is not None else None)
    executor.execute(statement, list(rows))


@lru_cache(maxsize=32)
def _insert_ignoring(dialect: str, table: Table, unique: tuple[str, ...] | None) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(unique) if unique is not None else None)
