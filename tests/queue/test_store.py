"""The job queue: each job claimed once, leases expire, dead workers' jobs come back."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.models import JobState
from node.queue.store import JobStore


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade(url)
    return JobStore(make_session_factory(make_engine(url)), "n1")


def _enqueue(jobs: JobStore, n: int) -> list[int]:
    return [jobs.enqueue(spool_file=f"{i}.dcm", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                         sop_instance_hash=f"{i:064x}", size_bytes=10) for i in range(n)]


def test_concurrent_claims_take_every_job_exactly_once(jobs: JobStore) -> None:
    ids = _enqueue(jobs, 40)

    def drain(owner: str) -> list[int]:
        taken = []
        while claimed := jobs.claim(JobState.PROCESSING, owner, 60):
            taken.extend(j.id for j in claimed)
        return taken

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(drain, ["a:1", "b:2", "c:3", "d:4"]))
    flat = [i for r in results for i in r]
    assert sorted(flat) == sorted(ids)


def test_expired_lease_makes_job_claimable_again(jobs: JobStore) -> None:
    [job_id] = _enqueue(jobs, 1)
    assert jobs.claim(JobState.PROCESSING, "w:1", lease_seconds=-1)  # lease already over
    again = jobs.claim(JobState.PROCESSING, "w:2", lease_seconds=60)
    assert [j.id for j in again] == [job_id]
    assert not jobs.claim(JobState.PROCESSING, "w:3", lease_seconds=60)


def test_stale_owner_cannot_settle_a_reclaimed_job(jobs: JobStore) -> None:
    [job_id] = _enqueue(jobs, 1)
    jobs.claim(JobState.PROCESSING, "w:1", lease_seconds=-1)
    jobs.claim(JobState.PROCESSING, "w:2", lease_seconds=60)
    assert not jobs.mark_clean(job_id, "w:1", new_sop_instance_uid="2.25.1", patient_pseudonym="P", detail="",
                               route="r", project="p", destinations=["d"])
    assert jobs.mark_clean(job_id, "w:2", new_sop_instance_uid="2.25.1", patient_pseudonym="P", detail="",
                           route="r", project="p", destinations=["d"])


def test_jobs_of_a_dead_process_are_released(jobs: JobStore) -> None:
    import socket

    [job_id] = _enqueue(jobs, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()[:40]}:{int(dead.stdout)}"
    jobs.claim(JobState.PROCESSING, owner, lease_seconds=3600)
    assert not jobs.claim(JobState.PROCESSING, "w:2", 60)
    assert jobs.release_dead_owners() == 1
    assert [j.id for j in jobs.claim(JobState.PROCESSING, "w:2", 60)] == [job_id]


def test_a_renewed_lease_is_not_taken_over(jobs: JobStore) -> None:
    [job_id] = _enqueue(jobs, 1)
    jobs.claim(JobState.PROCESSING, "w:1", lease_seconds=-1)  # would be claimable now ...
    assert jobs.extend_lease(job_id, "w:1", 60)  # ... but its worker is alive and renews
    assert not jobs.claim(JobState.PROCESSING, "w:2", 60)
    assert not jobs.extend_lease(job_id, "w:2", 60)  # only the holder can renew
