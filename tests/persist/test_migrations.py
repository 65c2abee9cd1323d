"""The schema comes only from migrations, and the migrations match the models."""

from __future__ import annotations

import stat
from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from node.persist.db import alembic_config, make_engine, upgrade


def test_upgrade_head_then_check_finds_no_drift(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    command.check(alembic_config(url))  # raises if models and migrations differ
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"jobs", "deliveries", "patients", "uids", "audit_events", "alembic_version"} <= tables


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)


def test_sqlite_database_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    upgrade(f"sqlite:///{path}")
    make_engine(f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_0003_carries_mappings_to_project_default_and_waiting_jobs_to_deliveries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0002")
    engine = make_engine(url)
    with engine.begin() as db:
        db.execute(text("INSERT INTO patients (original_hash, original_encrypted, pseudonym, date_offset_days, source,"
                        " created_at) VALUES ('h1', x'00', 'ANON-OLD', -400, 'derived', '2026-11-30')"))
        db.execute(text("INSERT INTO uids (original_hash, original_encrypted, new_uid, created_at)"
                        " VALUES ('u1', x'00', '2.25.1', '2026-11-30')"))
        for n, state in enumerate(("failed", "forwarding", "clean", "forwarded", "received")):
            db.execute(text(
                "INSERT INTO jobs (node, state, spool_file, calling_ae, sop_class_uid, sop_instance_hash, size_bytes,"
                " attempts, forward_attempts, next_attempt_at, received_at, updated_at) VALUES"
                f" ('n1', '{state}', '{n}.dcm', 'MODALITY', '1.2', 'x', 1, 1, 3, '2026-11-30', '2026-11-30',"
                " '2026-11-30')"))
    upgrade(url)
    with engine.connect() as db:
        assert db.execute(text("SELECT project FROM patients")).scalars().all() == ["default"]
        assert db.execute(text("SELECT project FROM uids")).scalars().all() == ["default"]
        states = dict(db.execute(text("SELECT spool_file, state FROM jobs")).all())
        assert states == {"0.dcm": "clean", "1.dcm": "clean", "2.dcm": "clean", "3.dcm": "forwarded",
                          "4.dcm": "received"}
        deliveries = db.execute(text("SELECT j.spool_file, d.destination, d.state FROM deliveries d"
                                     " JOIN jobs j ON j.id = d.job_id ORDER BY j.spool_file")).all()
        assert [tuple(row) for row in deliveries] == [(f"{n}.dcm", "default", "pending") for n in range(3)]
    command.check(alembic_config(url))
    engine.dispose()
