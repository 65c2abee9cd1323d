"""The schema comes only from migrations, and the migrations match the models."""

from __future__ import annotations

import stat
from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from node.persist.db import alembic_config, make_engine, upgrade


def test_upgrade_head_then_check_finds_no_drift(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    command.check(alembic_config(url))  # raises if models and migrations differ
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"jobs", "patients", "uids", "audit_events", "alembic_version"} <= tables


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)


def test_sqlite_database_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    upgrade(f"sqlite:///{path}")
    make_engine(f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
