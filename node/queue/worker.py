"""The de-identification worker: a separate process that claims received jobs one at a time,
picks the job's route (first match on caller, called AE title, source address, modality, SOP
class), de-identifies with the route's profile and pixel policy under the route's project's
mappings, and leaves one delivery per destination of the route.

De-identification is CPU-bound (pixel decoding, OCR), so the node runs several of these as
processes, not threads. A worker killed mid-job leaves its lease behind; the job is claimed
again when the lease runs out or when the supervisor sees the worker's pid is gone.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pydicom
import structlog

from node.config import ConfigError, Route, Settings
from node.deid.pipeline import DeidentificationError, Deidentifier
from node.deid.pseudonyms import MappingsUnavailable
from node.persist.mappings import MappingStore, RecordingMappings
from node.persist.models import JobState
from node.processes import poll
from node.queue.store import ClaimedJob, JobStore, worker_identity
from node.queue.sealing import SealBroken
from node.queue.spool import Spool

log = structlog.get_logger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
SPACE_WAIT_MAX_SECONDS = 10.0


class DeidWorker:
    def __init__(self, jobs: JobStore, spool: Spool, settings: Settings, deidentifier: Callable[[Route], Deidentifier],
                 mappings: Callable[[str], MappingStore], *, lease_seconds: float, poll_seconds: float,
                 max_attempts: int) -> None:
        self.jobs = jobs
        self.spool = spool
        self.settings = settings
        self.deidentifier = deidentifier  # the route's, built once per route per process
        self.mappings = mappings  # the project's
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
        try:
            original = self.spool.open_original(job.spool_file)  # decrypted once: routing and de-identification
        except SealBroken as exc:
            self._quarantine(job, str(exc))
            return
        route = self._route(job, original)
        if isinstance(route, str):
            self._quarantine(job, route)
            return
        mappings = RecordingMappings(self.mappings(route.project))
        try:
            with self._lease_kept(job):
                outcome = self.deidentifier(route).run_file(original, mappings)
        except DeidentificationError as exc:
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
                             patient_pseudonym=outcome.patient_pseudonym, detail=detail,
                             route=route.name, project=route.project, destinations=route.destinations)
        finished = time.perf_counter()
        log.info("deidentified", job=job.id, route=route.name, patient=outcome.patient_pseudonym, pixels=pixels,
                 seconds=round(finished - started, 4), run_seconds=round(deidentified - started, 4),
                 mappings_seconds=round(committed - deidentified, 4), store_seconds=round(finished - committed, 4))

    def _route(self, job: ClaimedJob, original: BinaryIO) -> Route | str:
        """The job's route, or the PHI-free reason none takes it. A route chosen before (ingest
        --route, an earlier pass of a released job) is kept; else the first that takes it, read
        from the header only if some route matches on what only the dataset says."""
        if job.route is not None:
            try:
                return self.settings.route(job.route)
            except ConfigError:
                return f"route {job.route!r} is no longer in the config"
        dataset = None
        if any(route.needs_dataset for route in self.settings.routes):
            dataset = _modality_and_class(original, job.sop_class_uid)
        route = self.settings.first_route(job.calling_ae, job.called_ae, job.source_host, dataset or ("", job.sop_class_uid))
        if route is None:
            modality = dataset[0] if dataset else "-"
            return f"no route takes this instance (caller {job.calling_ae}, modality {modality or '-'})"
        return route

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
        self.jobs.retry_later(job.id, self.owner, error=reason, delay_seconds=delay)
        log.warning("deid_retry", job=job.id, reason=reason, delay=delay)


def _modality_and_class(original: BinaryIO, sop_class_uid: str) -> tuple[str, str]:
    """(Modality, SOP Class UID) from the header alone, read from the decrypted original and
    rewound for de-identification; a file that cannot be read matches on its SOP class as
    received (the de-identification step quarantines it anyway)."""
    try:
        header = pydicom.dcmread(original, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:  # noqa: BLE001 - whatever a damaged file makes pydicom raise
        return "", sop_class_uid
    finally:
        original.seek(0)
    return str(header.get("Modality", "") or ""), str(header.get("SOPClassUID", "") or sop_class_uid)
