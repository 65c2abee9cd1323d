"""Deliveries: each (instance, destination) pair claimed, retried and quarantined on its own; a
job is forwarded only when every destination has it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.models import JobState
from node.queue.deliveries import DeliveryStore, Refused, Waiting
from node.queue.store import JobStore


@pytest.fixture
def stores(tmp_path: Path) -> tuple[JobStore, DeliveryStore]:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    return JobStore(sessions, "n1"), DeliveryStore(sessions, "n1")


def _clean_job(jobs: JobStore, n: int, destinations: list[str]) -> int:
    job_id = jobs.enqueue(spool_file=f"{n}.dcm", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                          sop_instance_hash=f"{n:064x}", size_bytes=10)
    [claimed] = jobs.claim(JobState.PROCESSING, "w:1", 60)
    assert jobs.mark_clean(claimed.id, "w:1", new_sop_instance_uid=f"2.25.{n}", patient_pseudonym="ANON-P",
                           detail="", route="r", project="proj", destinations=destinations)
    return job_id


def test_a_waiting_destination_holds_back_no_other_and_status_says_since_when(
        stores: tuple[JobStore, DeliveryStore]) -> None:
    jobs, deliveries = stores
    job_id = _clean_job(jobs, 1, ["pacs", "folder"])
    [to_pacs] = deliveries.claim("pacs", "f:1", 60, 10)
    [to_folder] = deliveries.claim("folder", "f:2", 60, 10)
    assert (to_pacs.project, to_pacs.patient_pseudonym, to_pacs.new_sop_instance_uid) == ("proj", "ANON-P", "2.25.1")
    assert deliveries.settle("pacs", "f:1", delivered=[], waiting=[Waiting(to_pacs, "unreachable", 3600)],
                             refused=[]) == []
    assert deliveries.settle("folder", "f:2", delivered=[to_folder], waiting=[], refused=[]) == []
    assert jobs.get(job_id).state == JobState.CLEAN  # the PACS still lacks it
    assert not deliveries.claim("pacs", "f:1", 60, 10)  # not due for an hour
    report = jobs.status().destinations
    assert report["pacs"].pending == 1 and report["pacs"].waiting_since is not None
    assert "folder" not in report

    assert deliveries.make_due("pacs") == 1
    [again] = deliveries.claim("pacs", "f:1", 60, 10)
    assert again.attempts == 1 and again.waiting_since is not None
    [finished] = deliveries.settle("pacs", "f:1", delivered=[again], waiting=[], refused=[])
    assert (finished.id, finished.state) == (job_id, JobState.FORWARDED)
    assert jobs.get(job_id).state == JobState.FORWARDED
    assert jobs.status().destinations == {}


def test_a_refusal_quarantines_that_delivery_and_a_release_resends_only_there(
        stores: tuple[JobStore, DeliveryStore]) -> None:
    jobs, deliveries = stores
    job_id = _clean_job(jobs, 1, ["pacs", "folder"])
    [to_pacs] = deliveries.claim("pacs", "f:1", 60, 10)
    assert deliveries.settle("pacs", "f:1", delivered=[], waiting=[], refused=[Refused(to_pacs, "0xA900")]) == []
    [to_folder] = deliveries.claim("folder", "f:2", 60, 10)
    [finished] = deliveries.settle("folder", "f:2", delivered=[to_folder], waiting=[], refused=[])
    assert finished.state == JobState.QUARANTINED and "pacs" in finished.reason and "0xA900" in finished.reason
    assert jobs.quarantined_destinations([job_id]) == {job_id: ["pacs"]}
    assert jobs.status().destinations["pacs"].quarantined == 1

    # released: de-identified again, then only the PACS gets it again
    assert jobs.requeue([job_id], from_states=[JobState.QUARANTINED], to_state=JobState.RECEIVED) == 1
    [claimed] = jobs.claim(JobState.PROCESSING, "w:1", 60)
    assert jobs.mark_clean(claimed.id, "w:1", new_sop_instance_uid="2.25.1", patient_pseudonym="ANON-P", detail="",
                           route="r", project="proj", destinations=["pacs", "folder"])
    assert not deliveries.claim("folder", "f:2", 60, 10)
    [retried] = deliveries.claim("pacs", "f:1", 60, 10)
    [finished] = deliveries.settle("pacs", "f:1", delivered=[retried], waiting=[], refused=[])
    assert finished.state == JobState.FORWARDED


def test_a_stale_forwarder_cannot_settle_and_a_dead_ones_deliveries_come_back(
        stores: tuple[JobStore, DeliveryStore]) -> None:
    jobs, deliveries = stores
    job_id = _clean_job(jobs, 1, ["pacs"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()[:40]}:{int(dead.stdout)}"
    [held] = deliveries.claim("pacs", owner, 3600, 10)
    assert not deliveries.claim("pacs", "f:2", 60, 10)
    assert jobs.release_dead_owners() == 1
    [again] = deliveries.claim("pacs", "f:2", 60, 10)
    assert deliveries.settle("pacs", owner, delivered=[held], waiting=[], refused=[]) == []  # no longer its own
    assert jobs.get(job_id).state == JobState.CLEAN
    assert [f.state for f in deliveries.settle("pacs", "f:2", delivered=[again], waiting=[], refused=[])] == [
        JobState.FORWARDED]
