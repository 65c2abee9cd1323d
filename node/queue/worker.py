"""The de-identification worker: a separate process that claims received jobs one at a time.

De-identification is CPU-bound (pixel decoding, OCR), so the node runs several of these as
processes, not threads. A worker killed mid-job leaves its lease behind; the job is claimed
again when the lease runs out or when the supervisor sees the worker's pid is gone.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from node.deid.pipeline import DeidentificationError, Deidentifier
from node.deid.pseudonyms import MappingsUnavailable
from node.persist.mappings import MappingStore, RecordingMappings
from node.persist.models import JobState
from node.processes import poll
from node.queue.store import ClaimedJob, JobStore, worker_identity
from node.receive.sealing import SealBroken
from node.receive.spool import Spool

log = structlog.get_logger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
SPACE_WAIT_MAX_SECONDS = 10.0


class DeidWorker:
    def __init__(self, jobs: JobStore, spool: Spool, deidentifier: Deidentifier, mappings: MappingStore, *,
                 lease_seconds: float, poll_seconds: float, max_attempts: int) -> None:
        self.jobs = jobs
        self.spool = spool
        self.deidentifier = deidentifier
        self.mappings = mappings
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.owner = worker_identity()
        self._space_waits = 0  # consecutive clean writes that found the disk full

    def run(self, stop: threading.Event) -> None:
        log.info("worker_started", owner=self.owner)
        poll(self.run_once, stop, self.poll_seconds)
        log.info("worker_stopped", owner=self.owner)

    def run_once(self) -> bool:
        """Process one job if one is due; False when the queue had nothing."""
        claimed = self.jobs.claim(JobState.PROCESSING, self.owner, self.lease_seconds)
        if not claimed:
            return False
        self.process(claimed[0])
        return True

    def process(self, job: ClaimedJob) -> None:
        if job.attempts > self.max_attempts:  # earlier claims died without settling: a poison instance
            self._quarantine(job, f"worker died or timed out on this instance {job.attempts - 1} times")
            return
        started = time.perf_counter()
        mappings = RecordingMappings(self.mappings)
        try:
            with self._lease_kept(job):
                outcome = self.deidentifier.run_file(self.spool.open_original(job.spool_file), mappings)
        except (DeidentificationError, SealBroken) as exc:
            self._quarantine(job, str(exc))
            return
        except MappingsUnavailable as exc:
            self._retry(job, f"mapping store unavailable ({exc})")
            return
        deidentified = time.perf_counter()
        try:
            mappings.commit(study_uid=outcome.new_study_instance_uid)
            committed = time.perf_counter()
            self.spool.write("clean", job.spool_file, *outcome.pieces)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                self._wait_for_space(job)
            else:
                self._retry(job, f"{type(exc).__name__} while storing the clean instance")
            return
        except Exception as exc:  # noqa: BLE001
            self._retry(job, f"{type(exc).__name__} while storing the clean instance")
            return
        self._space_waits = 0
        pixels = outcome.pixels.reason if outcome.pixels else "off"
        detail = outcome.pixels.audit_detail() if outcome.pixels else "pixels=off"
        self.jobs.mark_clean(job.id, self.owner, new_sop_instance_uid=outcome.new_sop_instance_uid,
                             patient_pseudonym=outcome.patient_pseudonym, detail=detail)
        finished = time.perf_counter()
        log.info("deidentified", job=job.id, patient=outcome.patient_pseudonym, pixels=pixels,
                 seconds=round(finished - started, 4), run_seconds=round(deidentified - started, 4),
                 mappings_seconds=round(committed - deidentified, 4), store_seconds=round(finished - committed, 4))

    @contextmanager
    def _lease_kept(self, job: ClaimedJob) -> Iterator[None]:
        """Renew the lease while a long instance (OCR of a cine loop) is being worked on, so that
        only a worker that died loses its job to another."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lease_seconds / 3):
                try:
                    self.jobs.extend_lease(job.id, self.owner, self.lease_seconds)
                except Exception as exc:  # noqa: BLE001 - a missed renewal only risks duplicate work
                    log.warning("lease_renewal_failed", job=job.id, error=type(exc).__name__)

        renewer = threading.Thread(target=renew, name=f"lease-{job.id}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()

    def _quarantine(self, job: ClaimedJob, reason: str) -> None:
        if self.jobs.quarantine(job.id, self.owner, reason):
            self.spool.quarantine(job.spool_file)
            log.warning("quarantined", job=job.id, reason=reason)

    def _wait_for_space(self, job: ClaimedJob) -> None:
        """The disk is full under an instance already acknowledged: never its fault, so it waits
        (backoff up to SPACE_WAIT_MAX_SECONDS, its attempt not counted) until the forwarder or an
        administrator frees space, and resumes on its own."""
        delay = min(SPACE_WAIT_MAX_SECONDS, 0.5 * 2.0 ** self._space_waits)
        self._space_waits += 1
        self.jobs.wait_for_space(job.id, self.owner, delay_seconds=delay)
        log.warning("deid_waiting_for_space", job=job.id, delay=delay)

    def _retry(self, job: ClaimedJob, reason: str) -> None:
        if job.attempts >= self.max_attempts:
            self._quarantine(job, f"{reason}; gave up after {job.attempts} attempts")
            return
        delay = min(60.0, 2.0 ** job.attempts)
        self.jobs.retry_later(job.id, self.owner, state=JobState.RECEIVED, error=reason, delay_seconds=delay)
        log.warning("deid_retry", job=job.id, reason=reason, delay=delay)
