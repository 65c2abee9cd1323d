"""Every admin command, on SQLite and on PostgreSQL: what it prints, what it changes, and the one
clear line and non-zero exit it gives on bad input (malformed CSV, unknown pseudonym, another
secret, a database that is behind, drifted or unreachable)."""

from __future__ import annotations

import csv
import io
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from node.cli import cli
from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from node.queue.deliveries import Waiting
from tests.nodeproc import REPO, SECRET, deid_node, node_env
from tests.persist.test_mappings import CT, MR, STUDY, Seen, deidentify
from tests.servers import free_port, unavailable

OTHER_SECRET = "another-secret-not-for-production"
WRONG_SECRET_LINE = "not the one that wrote this database"

Run = Callable[..., Result]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def config(request: pytest.FixtureRequest, node_config) -> Path:  # type: ignore[no-untyped-def]
    """A node config whose database is a SQLite file or a fresh database on the suite's PostgreSQL."""
    url = None
    if request.param == "postgres":
        if reason := unavailable("postgres"):
            pytest.skip(reason)
        url = request.getfixturevalue("postgres").create_database(f"cli_{uuid.uuid4().hex[:16]}")
    return node_config(database_url=url, pixels=False)


@pytest.fixture
def run(config: Path) -> Run:
    """Invoke one command in-process, as `deid-node --config CONFIG ARGS...` with `secret`."""

    def invoke(*args: str, secret: str = SECRET, stdin: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args], env={"DEID_SECRET": secret}, input=stdin)

    return invoke


@pytest.fixture
def node(config: Path, run: Run) -> Iterator[Node]:
    assert run("db", "upgrade").exit_code == 0
    n = Node(load_settings(config))
    yield n
    n.engine.dispose()


@pytest.fixture
def seen(node: Node) -> list[Seen]:
    """The node has de-identified two patients' instances and one two-instance study."""
    return [deidentify(node.mappings, name) for name in (CT, MR, *STUDY)]


def _rows(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.stdout)))


def _error(result: Result) -> str:
    """The one line a failing command printed last; the command must have failed."""
    assert result.exit_code != 0, result.output
    return result.stderr.strip().splitlines()[-1]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("command", list(_commands(cli)), ids=" ".join)
def test_every_command_explains_itself(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage:") and len(result.stdout.splitlines()) > 3


def test_db_check_passes_at_head_and_fails_behind_or_drifted(run: Run, node: Node) -> None:
    assert run("db", "check").exit_code == 0
    with node.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_uids_study_uid"))  # drift: the models have it
    assert "database schema" in _error(run("db", "check"))
    with node.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    assert "not up to date" in _error(run("db", "check"))


def test_export_writes_each_map_as_id_old_id_new(run: Run, seen: list[Seen]) -> None:
    patients = _rows(run("export-mappings"))
    assert patients[0] == ["id_old", "id_new"]
    assert dict(patients[1:]) == {str(s.original.PatientID): str(s.clean.PatientID) for s in seen}
    offsets = _rows(run("export-mappings", "--kind", "offsets"))
    assert offsets[0] == ["id_old", "id_new", "offset_days"] and len(offsets) == len(patients)
    uids = dict(_rows(run("export-mappings", "--kind", "uids"))[1:])
    for s in seen:
        assert uids[str(s.original.SOPInstanceUID)] == str(s.clean.SOPInstanceUID)


def test_export_to_a_file_is_owner_only(run: Run, seen: list[Seen], tmp_path: Path) -> None:
    target = tmp_path / "uids.csv"
    target.write_text("an older, world-readable export\n")
    target.chmod(0o644)
    assert run("export-mappings", "--kind", "uids", "-o", str(target)).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert str(seen[0].original.SOPInstanceUID) in target.read_text()


def test_export_of_one_patient_and_of_one_study(run: Run, seen: list[Seen]) -> None:
    ct = seen[0]
    mine = dict(_rows(run("export-mappings", "--kind", "uids", "--patient", str(ct.clean.PatientID)))[1:])
    assert str(ct.original.SOPInstanceUID) in mine and str(seen[1].original.SOPInstanceUID) not in mine
    study = seen[2:]
    rows = dict(_rows(run("export-mappings", "--kind", "uids", "--study", str(study[0].original.StudyInstanceUID)))[1:])
    assert {str(s.original.SOPInstanceUID) for s in study} <= set(rows)
    assert str(ct.original.SOPInstanceUID) not in rows


def test_export_of_an_unknown_pseudonym_fails_clearly(run: Run, seen: list[Seen]) -> None:
    assert "no patient has the pseudonym" in _error(run("export-mappings", "--patient", "ANON-NOSUCHPATIENT"))
    assert "no study" in _error(run("export-mappings", "--study", "2.25.1234"))


def test_lookup_answers_both_ways_and_leaves_a_trace(run: Run, seen: list[Seen], node: Node) -> None:
    ct = seen[0]
    [header, row] = _rows(run("lookup", str(ct.clean.PatientID)))
    assert header == ["kind", "id_old", "id_new", "offset_days"]
    assert row[:3] == ["patient", str(ct.original.PatientID), str(ct.clean.PatientID)]
    assert _rows(run("lookup", str(ct.original.PatientID)))[1] == row
    assert _rows(run("lookup", str(ct.original.SOPInstanceUID)))[1][:3] == [
        "uid", str(ct.original.SOPInstanceUID), str(ct.clean.SOPInstanceUID)]
    with node.engine.connect() as connection:
        traces = connection.execute(text("SELECT detail FROM audit_events WHERE event = 'mapping_lookup'")).scalars()
        assert list(traces) == ["matches=1"] * 3


def test_lookup_of_an_unknown_value_fails_clearly(run: Run, seen: list[Seen]) -> None:
    assert "no patient or UID mapping has that value" in _error(run("lookup", "DOE^JANE"))


def test_import_then_lookup_finds_the_imported_pseudonym(run: Run, node: Node, tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("id_old,id_new,offset_days\nTESTPATIENT^ALPHA,RESEARCH-0001,-30\nTESTPATIENT^BETA,RESEARCH-0002,\n")
    result = run("import-patient-map", str(path))
    assert result.exit_code == 0 and "imported 2 patients" in result.stdout
    assert _rows(run("lookup", "RESEARCH-0001"))[1] == ["patient", "TESTPATIENT^ALPHA", "RESEARCH-0001", "-30"]
    assert "0 patients (2 already present)" in run("import-patient-map", str(path)).stdout


def test_import_reads_standard_input(run: Run, node: Node) -> None:
    result = run("import-patient-map", "-", stdin="id_old,id_new\nTESTPATIENT^ALPHA,RESEARCH-0001\n")
    assert result.exit_code == 0 and "imported 1 patients" in result.stdout


def test_a_malformed_map_lists_its_lines_and_imports_nothing(run: Run, seen: list[Seen], tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text(f"id_old,id_new\nTESTPATIENT^ALPHA,RESEARCH-0001\nTESTPATIENT^BETA,{seen[0].clean.PatientID}\n"
                    "TESTPATIENT^GAMMA\nTESTPATIENT^ALPHA,RESEARCH-0004\n")
    result = run("import-patient-map", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:3] == [
        "line 3: id_new is already the pseudonym of another patient in this database",
        "line 4: 1 fields, the header has 2",
        "line 5: id_old repeats line 2",
    ]
    assert "nothing imported" in _error(result)
    assert "TESTPATIENT^ALPHA" not in result.output
    assert _error(run("lookup", "RESEARCH-0001"))


@pytest.mark.parametrize("content", [b"", b"patient,pseudonym\nA,B\n", b"id_old,id_new\n\xff\xfe\n"])
def test_a_file_that_is_no_patient_map_fails_clearly(run: Run, node: Node, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "map.csv"
    path.write_bytes(content)
    assert "nothing imported" in _error(run("import-patient-map", str(path)))


@pytest.mark.parametrize("command", [("lookup", "ANON-X"), ("export-mappings",), ("export-mappings", "--kind", "uids"),
                                     ("import-patient-map", str(REPO / "pyproject.toml"))])
def test_another_secret_gets_one_clear_line(run: Run, seen: list[Seen], command: tuple[str, ...]) -> None:
    result = run(*command, secret=OTHER_SECRET)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert WRONG_SECRET_LINE in _error(result) and len(result.stderr.strip().splitlines()) == 1


def test_a_node_with_another_secret_refuses_to_serve(config: Path, seen: list[Seen]) -> None:
    env = {**node_env(), "DEID_SECRET": OTHER_SECRET}
    result = subprocess.run([sys.executable, "-m", "node", "--config", str(config), "serve"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert WRONG_SECRET_LINE in result.stderr.strip().splitlines()[-1]


def test_the_installed_entry_point_runs_a_command(config: Path, seen: list[Seen]) -> None:
    result = deid_node(config, "export-mappings", "--kind", "offsets")
    assert str(seen[0].clean.PatientID) in result.stdout


def _quarantined_job(node: Node) -> int:
    """A job whose spool file is no DICOM at all: the real worker quarantines it."""
    name = node.spool.new_name()
    node.spool.accept(name, b"not a DICOM file at all" * 8)
    job = node.jobs.enqueue(spool_file=name, calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                            sop_instance_hash="0" * 64, size_bytes=192)
    assert node.deid_worker().run_once()
    return job


def test_quarantine_list_show_release_and_purge(run: Run, node: Node) -> None:
    job = _quarantined_job(node)
    [listed] = run("quarantine", "list").stdout.splitlines()
    assert listed.startswith(f"{job}\t") and "unreadable DICOM file" in listed
    shown = run("quarantine", "show", str(job)).stdout
    assert "state: quarantined" in shown.splitlines()
    assert "released 1" in run("quarantine", "release", str(job)).stdout
    assert [j.id for j in node.jobs.jobs_in([JobState.RECEIVED])] == [job]
    assert node.deid_worker().run_once()  # quarantined again
    assert run("quarantine", "purge", str(job)).exit_code == 2  # needs --yes
    assert "purged 1" in run("quarantine", "purge", str(job), "--yes").stdout
    assert node.jobs.get(job) is None and node.spool.count("quarantine") == 0
    assert "no job" in _error(run("quarantine", "show", str(job)))


def test_status_says_since_when_a_destination_is_waited_for_and_retry_makes_it_due(run: Run, node: Node) -> None:
    job = node.jobs.enqueue(spool_file="x.dcm", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                            sop_instance_hash="1" * 64, size_bytes=1)
    node.jobs.claim(JobState.PROCESSING, "w:1", 60)
    node.jobs.mark_clean(job, "w:1", new_sop_instance_uid="2.25.1", patient_pseudonym="ANON-TEST", detail="",
                         route="default", project="default", destinations=["default"])
    [delivery] = node.deliveries.claim("default", "f:1", 60, 10)
    node.deliveries.settle("default", "f:1", delivered=[], waiting=[Waiting(delivery, "association rejected", 3600)],
                           refused=[])
    status = run("status").stdout
    assert "clean        1" in status
    assert re.search(r"^waiting for default since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: 1 to deliver$", status, re.M)
    assert "oldest waiting: -" not in status
    assert run("retry").exit_code == 2  # names no job
    assert "1 waiting deliveries due now" in run("retry", "--all", "--destination", "default").stdout
    assert [d.id for d in node.deliveries.claim("default", "f:1", 60, 10)] == [delivery.id]


def test_an_unreachable_database_is_one_clear_line(node_config) -> None:  # type: ignore[no-untyped-def]
    closed = node_config(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    result = CliRunner().invoke(cli, ["--config", str(closed), "status"])
    assert "cannot use the database" in _error(result) and "Connection refused" in _error(result)
