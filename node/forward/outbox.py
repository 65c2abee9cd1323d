"""The forwarder loop of one destination: claims that destination's due deliveries in batches,
hands them to its Sender, settles each by the outcome.

DELIVERED settles the delivery (and, when it was the job's last, deletes the spool copies).
WAIT is a transport problem: the delivery is due again after a capped exponential backoff, for as
long as `forward.give_up_after_seconds` since its first WAIT, and resumes by itself when the
destination is back; only that age limit, or REFUSED (the destination refused this instance for
cause), quarantines, and then only this delivery.

Batches follow each other on one connection, released once the loop has had no work for
`forward.idle_release_seconds`, and when it stops.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import structlog

from node.config import ForwardSettings
from node.forward.sender import CleanFile, Outcome, Sender
from node.persist.models import JobState, utcnow
from node.processes import poll
from node.queue.deliveries import ClaimedDelivery, DeliveryStore, FinishedJob, Refused, Waiting
from node.queue.store import worker_identity
from node.queue.spool import Spool

log = structlog.get_logger(__name__)


class Forwarder:
    def __init__(self, deliveries: DeliveryStore, spool: Spool, destination: str, sender: Sender,
                 settings: ForwardSettings, *, lease_seconds: float, poll_seconds: float) -> None:
        self.deliveries = deliveries
        self.spool = spool
        self.destination = destination
        self.sender = sender
        self.settings = settings
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.owner = worker_identity()

    def run(self, stop: threading.Event) -> None:
        log.info("forwarder_started", owner=self.owner, destination=self.destination)
        try:
            poll(self.run_once, stop, self.poll_seconds)
        finally:
            self.sender.close()

    def backoff(self, attempts: int) -> float:
        return min(self.settings.backoff_max_seconds, self.settings.backoff_initial_seconds * 2.0 ** attempts)

    def run_once(self) -> bool:
        batch = self.deliveries.claim(self.destination, self.owner, self.lease_seconds, self.settings.batch_size)
        if not batch:
            self.sender.release_if_idle(time.monotonic(), self.settings.idle_release_seconds)
            return False
        started = time.perf_counter()
        results = self.sender.send([self._clean_file(d) for d in batch])
        sent = time.perf_counter()
        now = utcnow()
        delivered, waiting, refused = [], [], []
        for delivery, result in zip(batch, results, strict=True):
            if result.outcome is Outcome.DELIVERED:
                delivered.append(delivery)
            elif result.outcome is Outcome.REFUSED:
                refused.append(Refused(delivery, f"refused by {self.destination}: {result.detail}"))
            elif self._waited_too_long(delivery, now):
                refused.append(Refused(delivery, f"{self.destination} unreachable for more than "
                                                 f"{self.settings.give_up_after_seconds:g} s: {result.detail}"))
            else:
                waiting.append(Waiting(delivery, result.detail, self.backoff(delivery.attempts)))
        finished = self.deliveries.settle(self.destination, self.owner, delivered=delivered, waiting=waiting,
                                          refused=refused)
        for job in finished:
            self._tidy_spool(job)
        if waiting:
            log.warning("destination_waiting", destination=self.destination, count=len(waiting),
                        reason=waiting[0].error, delay=waiting[0].delay_seconds)
        log.info("forward_batch", destination=self.destination, count=len(batch), delivered=len(delivered),
                 waiting=len(waiting), refused=len(refused), send_seconds=round(sent - started, 4),
                 settle_seconds=round(time.perf_counter() - sent, 4))
        return True

    def _clean_file(self, delivery: ClaimedDelivery) -> CleanFile:
        return CleanFile(self.spool.path("clean", delivery.spool_file), delivery.sop_class_uid,
                         project=delivery.project, patient=delivery.patient_pseudonym,
                         sop_instance_uid=delivery.new_sop_instance_uid)

    def _waited_too_long(self, delivery: ClaimedDelivery, now: datetime) -> bool:
        since = delivery.waiting_since
        if since is None:
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=now.tzinfo)
        return (now - since).total_seconds() >= self.settings.give_up_after_seconds

    def _tidy_spool(self, job: FinishedJob) -> None:
        """Every destination has the job: its spool copies go. Some destination quarantined it:
        the original is set aside with the job (a release de-identifies it again, and only the
        destinations that lack it get it)."""
        if job.state is JobState.FORWARDED:
            self.spool.remove("clean", job.spool_file)
            self.spool.remove("incoming", job.spool_file)
            log.info("forwarded", job=job.id)
        else:
            self.spool.quarantine(job.spool_file)
            log.warning("quarantined", job=job.id, reason=job.reason)
