"""Originals that no job reaches, and quarantined ones past their retention.

The SCP writes the spool file, then the job row, then answers. A kill between the two leaves an
original in incoming/ that no command can reach and no restart looks at: PHI kept for nothing,
and an instance that may have reached us whole. At start-up, before anything else touches the
spool, each such file is adopted: enqueued as the SCP would have (its file meta says what it is),
or, if it cannot be read, quarantined with the reason. Originals written before the spool was
sealed are sealed, and originals of jobs already forwarded (a kill between settling and
deleting) are deleted. Quarantined originals are deleted once `quarantine.retention_days` have
passed, each with an audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pydicom
import structlog

from node.deid.pseudonyms import KeyedDerivation
from node.persist.models import JobState
from node.queue.store import JobStore
from node.queue.sealing import MAGIC, SealBroken
from node.queue.spool import Spool

log = structlog.get_logger(__name__)

ADOPTED_CALLER = "(adopted)"  # the calling AE title of an adopted job: the real one was never recorded
_NO_UID_HASH = "0" * 64


@dataclass(frozen=True)
class SweepReport:
    adopted: int = 0
    unreadable: int = 0
    sealed: int = 0
    leftovers: int = 0


def sweep_spool(spool: Spool, jobs: JobStore, derivation: KeyedDerivation, route: str | None = None) -> SweepReport:
    """Run before the SCP and the workers start: nothing else may write incoming/ meanwhile.
    An orphan's caller is not known: on a node with one route it takes that `route`; with several,
    the worker finds none for it and quarantines it with that reason (kept, not lost)."""
    sealed = sum(_seal_if_plain(spool, area, name) for area in ("incoming", "quarantine")
                 for name in spool.names(area))
    names = spool.names("incoming")
    states = jobs.states_of(names)
    adopted = unreadable = leftovers = 0
    for name in names:
        state = states.get(name)
        if state is None:
            readable = _adopt(spool, jobs, derivation, name, route)
            adopted += readable
            unreadable += not readable
        elif state == JobState.FORWARDED:
            spool.remove("clean", name)
            spool.remove("incoming", name)
            leftovers += 1
    report = SweepReport(adopted, unreadable, sealed, leftovers)
    if report != SweepReport():
        log.warning("spool_swept", adopted=adopted, unreadable=unreadable, sealed=sealed, leftovers=leftovers)
    return report


def _seal_if_plain(spool: Spool, area: str, name: str) -> bool:
    path = spool.path(area, name)
    with path.open("rb") as original:
        if original.read(len(MAGIC)) == MAGIC:
            return False
    spool.reseal(area, name)
    return True


def _adopt(spool: Spool, jobs: JobStore, derivation: KeyedDerivation, name: str, route: str | None) -> bool:
    """Enqueue an orphan as the SCP would have; quarantine it if unreadable. True if readable."""
    size = spool.path("incoming", name).stat().st_size
    try:
        with spool.open_original(name) as original:
            meta = pydicom.dcmread(original, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).file_meta
        sop_class, sop_instance = str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)
        problem = "" if sop_class and sop_instance else "file meta lacks the SOP class or instance UID"
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or foreign file makes the reader raise
        sop_class = sop_instance = ""
        problem = str(exc) if isinstance(exc, SealBroken) else type(exc).__name__  # pydicom's may quote values
    instance_hash = derivation.lookup_hash("uid", sop_instance) if sop_instance else _NO_UID_HASH
    job_id = jobs.enqueue(spool_file=name, calling_ae=ADOPTED_CALLER, sop_class_uid=sop_class,
                          sop_instance_hash=instance_hash, size_bytes=size, route=route)
    if problem:
        reason = f"spool file without a job, unreadable ({problem})"
        jobs.quarantine(job_id, None, reason)
        spool.quarantine(name)
        log.warning("quarantined", job=job_id, reason=reason)
        return False
    log.warning("adopted", job=job_id, sop=instance_hash[:16], bytes=size)
    return True


def purge_expired_quarantine(spool: Spool, jobs: JobStore, retention_days: float) -> int:
    """Delete quarantined originals (and their jobs) set aside more than `retention_days` ago."""
    purged = 0
    for job in jobs.expired_quarantine(timedelta(days=retention_days)):
        if jobs.purge(job.id, f"quarantine retention {retention_days:g} days"):
            spool.remove("quarantine", job.spool_file)
            spool.remove("incoming", job.spool_file)
            purged += 1
    if purged:
        log.warning("quarantine_purged", count=purged, retention_days=retention_days)
    return purged
