"""The forwarder loop: claims clean jobs in batches, sends them, settles each one.

Batches follow each other on one association, released once the loop has had no work for
`forward.idle_release_seconds`, and when it stops.

A success deletes the spool copies; a failure waits with exponential backoff; after the
configured number of tries the job goes to quarantine (the dead letter), where `retry` can
send it again later.
"""

from __future__ import annotations

import threading
import time

import structlog

from node.config import ForwardSettings
from node.forward.sender import CleanFile, Sender
from node.persist.models import JobState
from node.processes import poll
from node.queue.store import JobStore, worker_identity
from node.receive.spool import Spool

log = structlog.get_logger(__name__)


class Forwarder:
    def __init__(self, jobs: JobStore, spool: Spool, scu: Sender, settings: ForwardSettings, *,
                 lease_seconds: float, poll_seconds: float) -> None:
        self.jobs = jobs
        self.spool = spool
        self.scu = scu
        self.settings = settings
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.owner = worker_identity()

    def run(self, stop: threading.Event) -> None:
        log.info("forwarder_started", owner=self.owner, destination=self.scu.name)
        try:
            poll(self.run_once, stop, self.poll_seconds)
        finally:
            self.scu.close()

    def backoff(self, attempts: int) -> float:
        return min(self.settings.backoff_max_seconds, self.settings.backoff_initial_seconds * 2.0 ** attempts)

    def run_once(self) -> bool:
        batch = self.jobs.claim(JobState.FORWARDING, self.owner, self.lease_seconds, self.settings.batch_size)
        if not batch:
            self.scu.release_if_idle(time.monotonic(), self.settings.idle_release_seconds)
            return False
        files = [CleanFile(self.spool.path("clean", job.spool_file), job.sop_class_uid) for job in batch]
        started = time.perf_counter()
        results = self.scu.send(files)
        sent = time.perf_counter()
        stored = []
        for job, result in zip(batch, results, strict=True):
            if result.stored:
                stored.append((job, result))
            elif job.forward_attempts + 1 >= self.settings.max_attempts:
                reason = f"forward failed {job.forward_attempts + 1} times: {result.detail}"
                if self.jobs.quarantine(job.id, self.owner, reason):
                    self.spool.quarantine(job.spool_file)
                    log.warning("quarantined", job=job.id, reason=reason)
            else:
                delay = self.backoff(job.forward_attempts)
                self.jobs.retry_later(job.id, self.owner, state=JobState.FAILED, error=result.detail,
                                      delay_seconds=delay, destination=self.scu.name)
                log.warning("forward_retry", job=job.id, reason=result.detail, delay=delay)
        forwarded = self.jobs.mark_forwarded([job.id for job, _ in stored], self.owner, self.scu.name)
        for job, result in stored:
            if job.id in forwarded:
                self.spool.remove("clean", job.spool_file)
                self.spool.remove("incoming", job.spool_file)
                log.info("forwarded", job=job.id, patient=job.patient_pseudonym, status=result.detail)
        settled = time.perf_counter()
        log.info("forward_batch", count=len(batch), stored=sum(r.stored for r in results),
                 send_seconds=round(sent - started, 4), settle_seconds=round(settled - sent, 4))
        return True
