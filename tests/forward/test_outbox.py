"""The forwarder loop sends its batches over one association, releases it after
`forward.idle_release_seconds` without work, and when it stops; a destination's outage waits,
a refusal quarantines only that delivery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bench.sink import Sink
from node.config import Destination, ForwardSettings
from node.forward.dimse import DimseSender
from node.forward.folder import FolderSender
from node.forward.outbox import Forwarder
from node.forward.sender import CleanFile, Outcome, SendResult
from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.models import Job, JobState
from node.queue.deliveries import DeliveryStore
from node.queue.store import JobStore
from node.queue.sealing import Sealer
from node.queue.spool import Spool
from tests.nodeproc import wait_until
from tests.servers import free_port
from tests.synthetic import write_series

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade(url)
    return JobStore(make_session_factory(make_engine(url)), "n1")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", Sealer(b"test-secret-not-for-production"))


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    with Sink(free_port(), tmp_path / "sink") as server:
        yield server


def _add_clean_jobs(jobs: JobStore, spool: Spool, files: Sequence[Path], destinations: Sequence[str] = ("sink",)
                    ) -> None:
    """Jobs as a deid worker leaves them: the clean file in the spool, the job waiting to be forwarded."""
    for path in files:
        name = spool.new_name()
        spool.write("clean", name, path.read_bytes())
        job_id = jobs.enqueue(spool_file=name, calling_ae="MODALITY", sop_class_uid=CT_IMAGE,
                              sop_instance_hash=name.ljust(64, "0"), size_bytes=path.stat().st_size)
        [claimed] = jobs.claim(JobState.PROCESSING, "w:1", 60)
        assert claimed.id == job_id
        assert jobs.mark_clean(job_id, "w:1", new_sop_instance_uid=f"2.25.{job_id}", patient_pseudonym="P",
                               detail="", route="r", project="default", destinations=destinations)


class _Running:
    """Forwarder.run in a thread, as the forwarder process runs it."""

    def __init__(self, jobs: JobStore, spool: Spool, sink: Sink, idle_release_seconds: float) -> None:
        destination = Destination(ae_title=sink.ae_title, host="127.0.0.1", port=sink.port)
        settings = ForwardSettings(destination=destination, batch_size=4, timeout_seconds=10,
                                   idle_release_seconds=idle_release_seconds)
        scu = DimseSender("sink", destination, calling_ae_title=settings.calling_ae_title,
                          timeout=settings.timeout_seconds)
        self.forwarder = Forwarder(DeliveryStore(jobs._sessions, jobs.node), spool, "sink", scu, settings,
                                   lease_seconds=60, poll_seconds=0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop,))

    def __enter__(self) -> _Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_batches_share_one_association_released_after_the_idle_seconds(
    jobs: JobStore, spool: Spool, sink: Sink, tmp_path: Path
) -> None:
    files = write_series(tmp_path / "ct", 16)
    _add_clean_jobs(jobs, spool, files[:12])
    with _Running(jobs, spool, sink, idle_release_seconds=1.0):
        assert wait_until(lambda: sink.count == 12, timeout=60, interval=0.02)
        stored = time.monotonic()
        assert sink.associations == 1  # three batches of four
        assert sink.open_associations == 1
        assert wait_until(lambda: sink.open_associations == 0, timeout=10, interval=0.02)
        assert 0.5 <= time.monotonic() - stored < 5
        assert wait_until(lambda: jobs.status().by_state.get("forwarded") == 12, timeout=10)
        assert spool.count("clean") == 0

        _add_clean_jobs(jobs, spool, files[12:])  # more work after the release: a new association
        assert wait_until(lambda: sink.count == 16, timeout=60, interval=0.02)
        assert sink.associations == 2


def test_stopping_the_forwarder_releases_its_association(
    jobs: JobStore, spool: Spool, sink: Sink, tmp_path: Path
) -> None:
    _add_clean_jobs(jobs, spool, write_series(tmp_path / "ct", 4))
    with _Running(jobs, spool, sink, idle_release_seconds=3600):
        assert wait_until(lambda: sink.count == 4, timeout=60, interval=0.02)
        time.sleep(0.3)  # several idle polls: the association stays
        assert sink.open_associations == 1
    assert wait_until(lambda: sink.open_associations == 0, timeout=10, interval=0.02)


class _RefusingClass:
    """A destination that refuses one SOP class for cause (as a PACS answers 0xA900 to a class it
    does not store) and stores the rest in a real folder."""

    def __init__(self, refused_class: str, folder: FolderSender) -> None:
        self.refused_class = refused_class
        self.folder = folder
        self.name = "picky"

    def send(self, files: Sequence[CleanFile]) -> list[SendResult]:
        return [SendResult(Outcome.REFUSED, "0xA900") if f.sop_class_uid == self.refused_class
                else self.folder.send([f])[0] for f in files]

    def release_if_idle(self, now: float, idle_seconds: float) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_refusal_quarantines_that_delivery_only(jobs: JobStore, spool: Spool, tmp_path: Path) -> None:
    files = write_series(tmp_path / "ct", 3)
    _add_clean_jobs(jobs, spool, files, destinations=("folder", "picky"))
    refused_job = jobs.jobs_in([JobState.CLEAN])[1]
    with jobs._sessions.begin() as session:  # this one instance is of a class the picky destination refuses
        session.get(Job, refused_job.id).sop_class_uid = MR_IMAGE
    deliveries = DeliveryStore(jobs._sessions, jobs.node)
    settings = ForwardSettings(batch_size=8)
    forwarders = [Forwarder(deliveries, spool, "folder", FolderSender("folder", tmp_path / "out-a"), settings,
                            lease_seconds=60, poll_seconds=0.05),
                  Forwarder(deliveries, spool, "picky", _RefusingClass(MR_IMAGE, FolderSender("picky", tmp_path / "out-b")),
                            settings, lease_seconds=60, poll_seconds=0.05)]
    for forwarder in forwarders:
        assert forwarder.run_once()
        assert not forwarder.run_once()  # nothing left to retry: a refusal is final
    assert len(list((tmp_path / "out-a").rglob("*.dcm"))) == 3  # the folder has all three
    assert len(list((tmp_path / "out-b").rglob("*.dcm"))) == 2
    assert [j.id for j in jobs.jobs_in([JobState.QUARANTINED])] == [refused_job.id]
    assert jobs.get(refused_job.id).last_error == "delivery to picky: refused by picky: 0xA900"
    assert jobs.quarantined_destinations([refused_job.id]) == {refused_job.id: ["picky"]}
    assert len(jobs.jobs_in([JobState.FORWARDED])) == 2
    assert spool.count("clean") == 0


def test_a_folder_that_cannot_be_written_waits_and_never_refuses(tmp_path: Path) -> None:
    [source] = write_series(tmp_path / "ct", 1)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    [result] = FolderSender("folder", blocked).send([CleanFile(source, CT_IMAGE, project="p", patient="ANON-1")])
    assert result.outcome is Outcome.WAIT and "cannot write to the folder" in result.detail


def test_a_folder_sender_removes_the_partial_files_of_dead_writers_only(tmp_path: Path) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    partials = tmp_path / "out" / ".partial"
    partials.mkdir(parents=True)
    (partials / f"a.dcm.{dead}.part").write_bytes(b"half")
    (partials / f"b.dcm.{os.getpid()}.part").write_bytes(b"being written")
    FolderSender("folder", tmp_path / "out")
    assert sorted(p.name for p in partials.iterdir()) == [f"b.dcm.{os.getpid()}.part"]
