"""What the status page shows, read from the job and audit tables through small functions the
integrator can rewire when routes and per-destination deliveries arrive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.factory import Node
from node.metrics import Labels, as_utc, jobs_per_destination
from node.persist.models import AuditEvent, Job, JobState, utcnow

CHART_MINUTES = 60
CHART_EVENTS = ("received", "forwarded", "quarantined")


@dataclass(frozen=True)
class FailingDestination:
    destination: str
    jobs: int
    last_reason: str
    since: datetime


@dataclass(frozen=True)
class QuarantinedJob:
    id: int
    received_at: datetime
    reason: str
    sop_instance_hash: str  # a keyed hash, shortened for display


@dataclass(frozen=True)
class StatusView:
    by_state: dict[str, int]
    per_destination: dict[str, dict[str, int]]
    oldest_waiting: datetime | None
    per_minute: dict[str, list[int]]
    failing: list[FailingDestination]
    quarantine: list[QuarantinedJob]
    read_at: datetime


def read_status(node: Node) -> StatusView:
    report = node.jobs.status()
    labels = Labels.of(node.settings)
    with node.sessions() as session:
        per_destination = jobs_per_destination(session, node.settings.node_name, labels)
        per_minute = events_per_minute(session, node.settings.node_name, utcnow())
        failing = failing_destinations(session, node.settings.node_name, labels)
    quarantine = [QuarantinedJob(j.id, as_utc(j.received_at), j.last_error or "", j.sop_instance_hash[:12])
                  for j in node.jobs.jobs_in([JobState.QUARANTINED], limit=200)]
    return StatusView(report.by_state, per_destination, report.oldest_waiting, per_minute, failing, quarantine,
                      utcnow())


def events_per_minute(session: Session, node: str, now: datetime) -> dict[str, list[int]]:
    """Per event kind, counts for each of the last CHART_MINUTES minutes, oldest first."""
    start = now - timedelta(minutes=CHART_MINUTES)
    rows = session.execute(select(AuditEvent.event, AuditEvent.at).join(Job, Job.id == AuditEvent.job_id)
                           .where(Job.node == node, AuditEvent.event.in_(CHART_EVENTS), AuditEvent.at >= start))
    series = {event: [0] * CHART_MINUTES for event in CHART_EVENTS}
    for event, at in rows:
        minute = int((as_utc(at) - start).total_seconds() // 60)
        series[event][min(max(minute, 0), CHART_MINUTES - 1)] += 1
    return series


def failing_destinations(session: Session, node: str, labels: Labels) -> list[FailingDestination]:
    """Destinations with failed jobs, each with how many and the newest reason."""
    rows = session.execute(select(Job.destination, Job.last_error, Job.updated_at)
                           .where(Job.node == node, Job.state == JobState.FAILED).order_by(Job.updated_at.desc()))
    found: dict[str, FailingDestination] = {}
    for destination, reason, updated in rows:
        name = labels.destination(destination)
        if name in found:
            found[name] = FailingDestination(name, found[name].jobs + 1, found[name].last_reason, found[name].since)
        else:
            found[name] = FailingDestination(name, 1, reason or "", as_utc(updated))
    return list(found.values())
