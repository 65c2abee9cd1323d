"""`deid-node ingest DIR --route R`: every DICOM file under DIR takes the received instances'
durable path (spool, job, route, workers, destinations); other files are listed, not fatal."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from node.cli import cli
from node.config import load_settings
from node.factory import Node
from tests.nodeproc import SECRET, write_config
from tests.servers import free_port
from tests.synthetic import write_series


def test_ingest_queues_the_dicom_files_lists_the_others_and_everything_queued_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_SECRET", SECRET)  # the originals are sealed with it: the workers below need it too
    config = write_config(tmp_path / "node", port=free_port(), pixels=False, routes=[
        {"name": "archive", "calling_ae_titles": ["MODALITY"], "profile": "basic.yaml", "project": "archive",
         "destinations": ["folder"]}],
        destinations={"folder": {"kind": "folder", "path": str(tmp_path / "outbox")}})
    source = tmp_path / "source"
    originals = write_series(source / "a" / "b", 3, patient_id="FAKE-INGEST-1", name="INGESTTEST^PATIENT")
    (source / "notes.txt").write_text("not an image")
    (source / "a" / "DICOMDIR-ish.bin").write_bytes(b"\0" * 300)
    runner = CliRunner()

    result = runner.invoke(cli, ["--config", str(config), "ingest", str(source), "--route", "archive"],
                           env={"DEID_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sorted(lines[:-1]) == [f"skipped (not DICOM): {source / 'a' / 'DICOMDIR-ish.bin'}",
                                  f"skipped (not DICOM): {source / 'notes.txt'}"]
    assert lines[-1] == "queued 3, duplicate 0, not DICOM 2, unreadable 0, too large 0"
    again = runner.invoke(cli, ["--config", str(config), "ingest", str(source), "--route", "archive"],
                          env={"DEID_SECRET": SECRET})
    assert again.stdout.splitlines()[-1].startswith("queued 0, duplicate 3,")
    unknown = runner.invoke(cli, ["--config", str(config), "ingest", str(source), "--route", "nowhere"],
                            env={"DEID_SECRET": SECRET})
    assert unknown.exit_code == 1 and "no route named 'nowhere'" in unknown.output

    node = Node(load_settings(config))
    try:
        worker, forwarder = node.deid_worker(), node.forwarder("folder")
        while worker.run_once():
            pass
        while forwarder.run_once():
            pass
        assert node.jobs.status().by_state["forwarded"] == 3
        assert node.spool.count("incoming") == node.spool.count("clean") == 0
    finally:
        node.engine.dispose()
    arrived = [pydicom.dcmread(path) for path in sorted((tmp_path / "outbox" / "archive").rglob("*.dcm"))]
    assert len(arrived) == 3
    originals_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in originals}
    assert not {str(ds.SOPInstanceUID) for ds in arrived} & originals_uids
    assert {ds.PatientID for ds in arrived} != {"FAKE-INGEST-1"} and len({ds.PatientID for ds in arrived}) == 1
