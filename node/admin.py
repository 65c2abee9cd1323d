"""Administrative moves of quarantined jobs, shared by the CLI and the web page."""

from __future__ import annotations

from collections.abc import Collection

from node.factory import Node
from node.persist.models import JobState


def release(node: Node, job_ids: Collection[int] | None, destination: str | None = None) -> int:
    """Put quarantined jobs (all when `job_ids` is None; with `destination`, those whose delivery
    there was refused) back through de-identification; only destinations that lack them get them."""
    jobs = node.jobs.jobs_in([JobState.QUARANTINED])
    chosen = [j for j in jobs if job_ids is None or j.id in job_ids]
    if destination is not None:
        refused_by = node.jobs.quarantined_destinations([j.id for j in chosen])
        chosen = [j for j in chosen if destination in refused_by[j.id]]
    for job in chosen:
        if node.spool.path("quarantine", job.spool_file).exists():
            node.spool.move("quarantine", "incoming", job.spool_file)
    return node.jobs.requeue([j.id for j in chosen], from_states=[JobState.QUARANTINED],
                             to_state=JobState.RECEIVED) if chosen else 0


def purge(node: Node, job_ids: Collection[int]) -> int:
    """Delete quarantined instances for good: the spool copy and the job row, with an audit row."""
    chosen = [job for job in node.jobs.jobs_in([JobState.QUARANTINED]) if job.id in job_ids]
    purged = 0
    for job in chosen:
        if node.jobs.purge(job.id, "by an administrator"):
            node.spool.remove("quarantine", job.spool_file)
            purged += 1
    return purged


def retry_waiting(node: Node, destination: str | None = None) -> int:
    """Make every delivery that waits for a destination (all destinations when None) due now."""
    return node.deliveries.make_due(destination)
