"""Prometheus metrics, computed from the job and audit tables at scrape time.

Why from the database and not prometheus_client's multiprocess mode: the SCP, the workers and
the forwarder are separate processes that restart, and several nodes may share one PostgreSQL.
Every fact a metric counts is already written, durably, in one transaction with the job's move
(the audit trail), so counting it there is exact, survives restarts and crashes (a kill -9 loses
no increment, as a process-local counter file would), and needs no shared directory to clean.
The price is one scan of the audit table per scrape, which is fine for scrapes every 15 s or more.

Labels carry route and destination names, job states and stage names only: never PHI.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.persist.models import AuditEvent, Job, JobState

DEFAULT_ROUTE = "default"
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_PIXEL_COUNTS = re.compile(r"\bframes=(\d+) ocr=(\d+)\b")  # PixelOutcome.audit_detail, as the worker records it


@dataclass(frozen=True)
class Labels:
    """The one place that names a job's route and destination. Today a node has one route and
    one destination; when jobs carry a route and deliveries a destination, rewire these two."""

    destination_name: str

    @classmethod
    def of(cls, settings: Settings) -> "Labels":
        """Named as the forwarder records it in the job row and audit trail (StoreSCU.name)."""
        destination = settings.forward.destination
        return cls(f"{destination.ae_title}@{destination.host}:{destination.port}")

    def route(self, _job_id: int | None = None) -> str:
        return DEFAULT_ROUTE

    def destination(self, recorded: str | None) -> str:
        """The destination a job row or audit event names, else the configured one."""
        return recorded or self.destination_name


@dataclass(frozen=True)
class EventCount:
    event: str
    detail: str | None
    count: int


def _this_node(node: str):  # type: ignore[no-untyped-def]
    """Events of this node's jobs; a purged job's events (job_id set NULL) still count, so the
    counters never go down."""
    return or_(Job.node == node, AuditEvent.job_id.is_(None))


def event_counts(session: Session, node: str, events: Sequence[str]) -> list[EventCount]:
    query = (select(AuditEvent.event, AuditEvent.detail, func.count()).select_from(AuditEvent)
             .outerjoin(Job, Job.id == AuditEvent.job_id)
             .where(AuditEvent.event.in_(events), _this_node(node)).group_by(AuditEvent.event, AuditEvent.detail))
    return [EventCount(e, d, n) for e, d, n in session.execute(query).all()]


def retried_by_destination(session: Session, node: str) -> list[tuple[str, str | None, int]]:
    """(event, destination of the job, count) for de-identification and forward retries."""
    query = (select(AuditEvent.event, Job.destination, func.count()).select_from(AuditEvent)
             .outerjoin(Job, Job.id == AuditEvent.job_id)
             .where(AuditEvent.event.in_(["deid_failed", "forward_failed", "requeued"]), _this_node(node))
             .group_by(AuditEvent.event, Job.destination))
    return [(e, d, n) for e, d, n in session.execute(query).all()]


def jobs_by_state(session: Session, node: str) -> list[tuple[JobState, str | None, int]]:
    query = (select(Job.state, Job.destination, func.count()).where(Job.node == node)
             .group_by(Job.state, Job.destination))
    return [(s, d, n) for s, d, n in session.execute(query).all()]


def stage_durations(session: Session, node: str) -> dict[str, list[float]]:
    """Seconds per job from received to de-identified, and from de-identified to forwarded."""
    def first(event: str):  # type: ignore[no-untyped-def]
        return func.min(case((AuditEvent.event == event, AuditEvent.at)))

    query = (select(first("received"), first("deidentified"), func.max(case((AuditEvent.event == "forwarded",
                                                                               AuditEvent.at))))
             .join(Job, Job.id == AuditEvent.job_id).where(Job.node == node).group_by(AuditEvent.job_id))
    durations: dict[str, list[float]] = {"deid": [], "forward": []}
    for received, cleaned, forwarded in session.execute(query).all():
        if received is not None and cleaned is not None:
            durations["deid"].append(_seconds(received, cleaned))
        if cleaned is not None and forwarded is not None:
            durations["forward"].append(_seconds(cleaned, forwarded))
    return durations


def pixel_frames(session: Session, node: str) -> tuple[int, int]:
    """Frames scanned and frames OCR'd, summed over the de-identified events' details."""
    details = session.scalars(select(AuditEvent.detail).select_from(AuditEvent)
                              .outerjoin(Job, Job.id == AuditEvent.job_id)
                              .where(AuditEvent.event == "deidentified", _this_node(node)))
    scanned = ocr = 0
    for detail in details:
        found = _PIXEL_COUNTS.search(detail or "")
        if found:
            scanned += int(found.group(1))
            ocr += int(found.group(2))
    return scanned, ocr


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (as_utc(end) - as_utc(start)).total_seconds())


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _histogram(values: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    values = sorted(values)
    buckets, position = [], 0
    for bound in STAGE_BUCKETS:
        while position < len(values) and values[position] <= bound:
            position += 1
        buckets.append((str(bound), float(position)))
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


class DatabaseCollector(Collector):
    """Reads every metric from the database when Prometheus scrapes."""

    def __init__(self, sessions: sessionmaker[Session], node: str, labels: Labels) -> None:
        self._sessions = sessions
        self._node = node
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        with self._sessions() as session:
            yield from self._counters(session)
            yield self._queue_depth(session)
            yield self._stages(session)
            scanned, ocr = pixel_frames(session, self._node)
        yield CounterMetricFamily("deid_node_pixel_frames_scanned", "Frames the pixel step looked at.", scanned)
        yield CounterMetricFamily("deid_node_pixel_frames_ocr", "Frames OCR read (regions or whole).", ocr)

    def _counters(self, session: Session) -> Iterator[Metric]:
        route = self._labels.route()
        simple: Counter[str] = Counter()
        for count in event_counts(session, self._node, ["received", "quarantined"]):
            simple[count.event] += count.count
        for event, help_text in (("received", "Instances received and made durable."),
                                 ("quarantined", "Instances set aside (never forwarded).")):
            family = CounterMetricFamily(f"deid_node_instances_{event}", help_text, labels=["route"])
            family.add_metric([route], simple.get(event, 0))
            yield family
        forwarded = CounterMetricFamily("deid_node_instances_forwarded", "Instances a destination took.",
                                        labels=["route", "destination"])
        per_destination: Counter[str] = Counter()
        for count in event_counts(session, self._node, ["forwarded"]):
            per_destination[self._labels.destination(count.detail)] += count.count
        per_destination.setdefault(self._labels.destination(None), 0)
        for destination, count in sorted(per_destination.items()):
            forwarded.add_metric([route, destination], count)
        yield forwarded
        retried = CounterMetricFamily("deid_node_instances_retried", "Retries: de-identification, forward, "
                                      "and administrative (retry/release).", labels=["route", "destination", "stage"])
        stages = {"deid_failed": "deid", "forward_failed": "forward", "requeued": "admin"}
        per_stage: Counter[tuple[str, str]] = Counter()
        for event, destination, count in retried_by_destination(session, self._node):
            per_stage[(self._labels.destination(destination), stages[event])] += count
        for stage in stages.values():
            per_stage.setdefault((self._labels.destination(None), stage), 0)
        for (destination, stage), count in sorted(per_stage.items()):
            retried.add_metric([route, destination, stage], count)
        yield retried

    def _queue_depth(self, session: Session) -> Metric:
        family = GaugeMetricFamily("deid_node_jobs", "Jobs per state (queue depth).", labels=["route", "state"])
        depth = Counter({state.value: 0 for state in JobState})
        for state, _destination, count in jobs_by_state(session, self._node):
            depth[JobState(state).value] += count
        for state, count in depth.items():
            family.add_metric([self._labels.route(), state], count)
        return family

    def _stages(self, session: Session) -> Metric:
        family = HistogramMetricFamily("deid_node_stage_seconds", "Seconds from received to de-identified "
                                       "(deid, queue wait included) and from there to forwarded (forward).",
                                       labels=["route", "stage"])
        for stage, values in stage_durations(session, self._node).items():
            buckets, total = _histogram(values)
            family.add_metric([self._labels.route(), stage], buckets, total)
        return family


def metrics_text(sessions: sessionmaker[Session], settings: Settings) -> bytes:
    """The Prometheus text exposition of this node's metrics, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions, settings.node_name, Labels.of(settings)))
    return generate_latest(registry)


def jobs_per_destination(session: Session, node: str, labels: Labels) -> dict[str, dict[str, int]]:
    """Jobs per destination, then per state, for the status page."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for state, destination, count in jobs_by_state(session, node):
        row = table[labels.destination(destination)]
        row[JobState(state).value] = row.get(JobState(state).value, 0) + count
    return dict(table)
