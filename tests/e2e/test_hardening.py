"""What an outside probe found (issue 17, items 3, 4, 5), tried on the real node: a spool disk
that fills up and is freed again loses and quarantines nothing it acknowledged; an original left
without a job by a kill is adopted and delivered; quarantined originals are sealed and purged after
their retention; a UID with letters in it never reaches the log."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from node.queue.sealing import MAGIC, SealBroken, Sealer
from node.queue.spool import Spool
from tests.nodeproc import SECRET, NodeProcess, job_counts, wait_until, write_config
from tests.servers import free_port, storescu, unavailable
from tests.synthetic import write_series

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("dcmtk")), reason="needs dcmtk")]

LETTERED_UID = "1.2.826.0.1.3680043.8.498.77.FAKEUIDWITHLETTERS"


class Sink:
    """A plain receiving SCP (the research destination), counting what it is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Dataset] = []
        self._server: Any = None

    def start(self) -> "Sink":
        ae = AE(ae_title="RESEARCH_PACS")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)

        def store(event):  # type: ignore[no-untyped-def]
            self.received.append(event.dataset)
            return 0x0000

        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of its own, to fill up for real."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free (0: until the disk refuses)."""
    ballast = directory / "ballast"
    with ballast.open("wb") as fh:
        while (free := os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize) > leave:
            try:
                fh.write(b"\0" * min(65536, max(4096, free - leave)))
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return ballast


def _send_each(port: int, files: list[Path]) -> list[int]:
    """C-STORE each file, one association; the statuses answered."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="DEID_NODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(path)).Status) for path in files]
    finally:
        assoc.release()


def test_a_full_spool_refuses_new_instances_and_delivers_every_acknowledged_one(tmp_path: Path, tmpfs: Path) -> None:
    files = write_series(tmp_path / "study", 10, patient_id="FAKE-FULL-1", name="FULLDISK^PATIENT")
    sink = Sink(free_port())
    port = free_port()
    config = write_config(tmp_path / "node", port=port, dest_port=sink.port, pixels=False, spool_dir=str(tmpfs),
                          forward={"max_attempts": 100, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5})
    with NodeProcess(config, port) as node:
        ballast = _fill(tmpfs, leave=250_000)  # about two instances' whole lives (3 x ~40 kB each)
        statuses = _send_each(port, files[:6])  # the destination is away: nothing leaves the spool
        assert 0xA700 in statuses, statuses  # refused once full, as before ...
        acknowledged = statuses.count(0x0000)
        assert acknowledged >= 1
        ballast.unlink()  # ... and once space is back:
        sink.start()
        try:
            acknowledged += _send_each(port, files[6:]).count(0x0000)
            assert acknowledged >= 5
            jobs = Node(load_settings(config)).jobs
            assert wait_until(lambda: jobs.status().by_state["forwarded"] == acknowledged, 120, 0.1)
            assert len(sink.received) == acknowledged
        finally:
            sink.stop()
        assert jobs.status().by_state["quarantined"] == 0
        assert "spool full" in node.log()


def test_a_clean_copy_that_finds_the_disk_full_waits_and_resumes_when_space_returns(
        tmpfs: Path, node_config) -> None:  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config(pixels=False, spool_dir=str(tmpfs))))
    node.upgrade_database()
    [path] = write_series(tmpfs.parent / "study", 1, patient_id="FAKE-FULL-2")
    name = node.spool.new_name()
    node.spool.accept(name, path.read_bytes())  # acknowledged by the SCP: spooled and queued
    job = node.jobs.enqueue(spool_file=name, calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                            sop_instance_hash="f" * 64, size_bytes=path.stat().st_size)
    worker = node.deid_worker()
    ballast = _fill(tmpfs, leave=0)  # another writer takes the rest of the disk
    for _ in range(3):  # more tries than workers.max_attempts (2): none counts
        assert wait_until(worker.run_once, 5, 0.1)
        waiting = node.jobs.get(job)
        assert waiting is not None and waiting.state == JobState.RECEIVED and waiting.attempts == 0
        assert waiting.last_error == "spool disk full"
    assert node.spool.count("quarantine") == 0 and node.spool.count("clean") == 0
    ballast.unlink()
    assert wait_until(worker.run_once, 15, 0.1)
    done = node.jobs.get(job)
    assert done is not None and done.state == JobState.CLEAN
    assert node.spool.count("clean") == 1


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A node killed between spool write and job row (its spool is written by hand here: one sealed
    instance, one plain one from a node before sealing, one that is no DICOM), then started with a
    quarantine retention of seconds; a modality then sends an instance whose UID has letters."""
    directory = tmp_path_factory.mktemp("restart")
    [orphan, legacy] = write_series(directory / "orphans", 2, patient_id="FAKE-ORPHAN-1", name="ORPHAN^PATIENT")
    lettered = write_series(directory / "lettered", 1, patient_id="FAKE-LETTERS-1")[0]
    ds = pydicom.dcmread(lettered)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = LETTERED_UID
    ds.save_as(lettered, enforce_file_format=True)
    sink = Sink(free_port()).start()
    port = free_port()
    config = write_config(directory / "node", port=port, dest_port=sink.port, pixels=False,
                          quarantine={"retention_days": 20 / 86400, "purge_interval_seconds": 0.5})
    spool = Spool(config.parent / "spool", Sealer(SECRET.encode()))
    spool.accept(spool.new_name(), orphan.read_bytes())
    (spool.root / "incoming" / spool.new_name()).write_bytes(legacy.read_bytes())
    spool.accept(spool.new_name(), b"FAKE not a DICOM file, no job either" * 4)
    try:
        with NodeProcess(config, port) as node:
            quarantined = [(p, p.read_bytes()) for p in (spool.root / "quarantine").iterdir()]
            plain_in_incoming = [p.name for p in (spool.root / "incoming").iterdir()
                                 if not p.read_bytes().startswith(MAGIC)]
            reasons = [job.last_error for job in Node(load_settings(config)).jobs.jobs_in([JobState.QUARANTINED])]
            storescu([lettered], port, called_ae="DEID_NODE")
            wait_until(lambda: len(sink.received) >= 3, 60, 0.1)
            purged = wait_until(lambda: not any((spool.root / "quarantine").iterdir()), 60, 0.1)
            wait_until(lambda: "quarantine_purged" in node.log(), 10, 0.1)
            counts = job_counts(config)
        with sqlite3.connect(config.parent / "node.db") as db:
            audit = [row[0] for row in db.execute("SELECT detail FROM audit_events WHERE event = 'purged'")]
        yield {"quarantined": quarantined, "plain_in_incoming": plain_in_incoming, "reasons": reasons,
               "received": list(sink.received), "purged": purged, "counts": counts, "audit": audit,
               "log": node.log()}
    finally:
        sink.stop()


def test_an_original_left_without_a_job_is_adopted_and_delivered(restarted: dict[str, Any]) -> None:
    patients = sorted(str(ds.PatientID) for ds in restarted["received"])
    assert len(patients) == 3  # the two orphans and the instance sent afterwards
    assert not any("FAKE-" in p for p in patients)  # de-identified, as any other
    assert restarted["counts"].get("forwarded") == 3
    assert restarted["plain_in_incoming"] == []  # the plain one from before sealing was sealed first
    assert '"event": "adopted"' in restarted["log"]


def test_quarantined_originals_are_sealed_and_purged_after_the_retention(restarted: dict[str, Any]) -> None:
    [(path, sealed)] = restarted["quarantined"]  # the orphan that is no DICOM
    assert sealed.startswith(MAGIC) and b"FAKE not a DICOM" not in sealed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sealed)
    with pytest.raises(SealBroken):
        Sealer(b"not-the-node-secret").open(path)
    assert Sealer(SECRET.encode()).open(path).read().startswith(b"FAKE not a DICOM")
    assert restarted["reasons"] == ["spool file without a job, unreadable (InvalidDicomError)"]
    assert restarted["purged"]
    assert restarted["counts"].get("quarantined", 0) == 0
    [detail] = restarted["audit"]
    assert "quarantine retention" in detail


def test_a_uid_with_letters_never_reaches_the_log(restarted: dict[str, Any]) -> None:
    assert "<redacted>" in restarted["log"]  # pynetdicom did warn about it, without the value
    assert "FAKEUIDWITHLETTERS" not in restarted["log"]
    assert "ORPHAN" not in restarted["log"] and "FAKE-ORPHAN" not in restarted["log"]
