"""What the status page shows, read from the job, delivery and audit tables: jobs per state,
deliveries per destination and state, the destinations deliveries wait for, the quarantine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.factory import Node
from node.metrics import RETIRED_STATES, as_utc
from node.persist.models import AuditEvent, Delivery, DeliveryState, Job, JobState, utcnow

CHART_MINUTES = 60
CHART_EVENTS = ("received", "forwarded", "quarantined")


@dataclass(frozen=True)
class WaitingDestination:
    """A destination that could not take some deliveries yet: since when, and why last."""

    destination: str
    deliveries: int
    last_reason: str
    since: datetime


@dataclass(frozen=True)
class QuarantinedJob:
    id: int
    received_at: datetime
    reason: str  # the job's own: why de-identification set it aside, or the first refusal
    refused_by: list[str]  # destinations whose delivery is quarantined (none: de-identification set it aside)
    sop_instance_hash: str  # a keyed hash, shortened for display


@dataclass(frozen=True)
class StatusView:
    by_state: dict[str, int]
    delivery_states: list[str]
    per_destination: dict[str, dict[str, int]]
    oldest_waiting: datetime | None
    per_minute: dict[str, list[int]]
    waiting: list[WaitingDestination]
    quarantine: list[QuarantinedJob]
    read_at: datetime


def read_status(node: Node) -> StatusView:
    report = node.jobs.status()
    name = node.settings.node_name
    with node.sessions() as session:
        per_destination = deliveries_per_destination(session, name, node.settings.routed_destinations)
        per_minute = events_per_minute(session, name, utcnow())
        waiting = waiting_destinations(session, name)
    jobs = node.jobs.jobs_in([JobState.QUARANTINED], limit=200)
    refused_by = node.jobs.quarantined_destinations([j.id for j in jobs])
    quarantine = [QuarantinedJob(j.id, as_utc(j.received_at), j.last_error or "", refused_by[j.id],
                                 j.sop_instance_hash[:12]) for j in jobs]
    by_state = {state: count for state, count in report.by_state.items()
                if count or JobState(state) not in RETIRED_STATES}
    return StatusView(by_state, [s.value for s in DeliveryState], per_destination, report.oldest_waiting,
                      per_minute, waiting, quarantine, utcnow())


def deliveries_per_destination(session: Session, node: str, configured: list[str]) -> dict[str, dict[str, int]]:
    """Deliveries per destination, then per state; every configured destination shows, and one
    that is no longer configured while rows still name it."""
    table: dict[str, dict[str, int]] = {name: {} for name in configured}
    for destination, state, count in session.execute(
            select(Delivery.destination, Delivery.state, func.count()).where(Delivery.node == node)
            .group_by(Delivery.destination, Delivery.state)):
        table.setdefault(destination, {})[DeliveryState(state).value] = count
    return table



def events_per_minute(session: Session, node: str, now: datetime) -> dict[str, list[int]]:
    """Per event kind (a job received, forwarded to every destination, quarantined), counts for
    each of the last CHART_MINUTES minutes, oldest first."""
    start = now - timedelta(minutes=CHART_MINUTES)
    rows = session.execute(select(AuditEvent.event, AuditEvent.at).join(Job, Job.id == AuditEvent.job_id)
                           .where(Job.node == node, AuditEvent.event.in_(CHART_EVENTS), AuditEvent.at >= start))
    series = {event: [0] * CHART_MINUTES for event in CHART_EVENTS}
    for event, at in rows:
        minute = int((as_utc(at) - start).total_seconds() // 60)
        series[event][min(max(minute, 0), CHART_MINUTES - 1)] += 1
    return series


def waiting_destinations(session: Session, node: str) -> list[WaitingDestination]:
    """Destinations with deliveries waiting (an outage, a busy peer), each with how many, since
    when (the oldest first failure) and the newest reason; longest waiting first."""
    rows = session.execute(select(Delivery.destination, Delivery.last_error, Delivery.waiting_since)
                           .where(Delivery.node == node, Delivery.state.in_([DeliveryState.PENDING,
                                                                            DeliveryState.SENDING]),
                                  Delivery.waiting_since.is_not(None))
                           .order_by(Delivery.updated_at.desc(), Delivery.id.desc()))
    found: dict[str, WaitingDestination] = {}
    for destination, reason, since in rows:
        known = found.get(destination)
        if known is None:
            found[destination] = WaitingDestination(destination, 1, reason or "", as_utc(since))
        else:
            found[destination] = WaitingDestination(destination, known.deliveries + 1, known.last_reason,
                                                    min(known.since, as_utc(since)))
    return sorted(found.values(), key=lambda w: w.since)
