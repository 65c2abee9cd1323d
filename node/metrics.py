"""Prometheus metrics, counted from the job and audit tables.

Why from the database and not prometheus_client's multiprocess mode: the SCP, the workers and
the forwarder are separate processes that restart, and several nodes may share one PostgreSQL.
Every fact a metric counts is already written, durably, in one transaction with the job's move
(the audit trail), so counting it there is exact, survives restarts and crashes (a kill -9 loses
no increment, as a process-local counter file would), and needs no shared directory to clean.

The audit trail is read incrementally: the first scrape after the web process starts reads it
whole, each later one only the events written since (by id, re-reading a margin of recent ids,
since PostgreSQL transactions may commit out of id order). Queue depth is a GROUP BY on jobs.

Labels carry route and destination names, job states and stage names only: never PHI.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.persist.models import AuditEvent, Job, JobState

DEFAULT_ROUTE = "default"
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
STAGES = ("deid", "forward")
RETRY_STAGES = {"deid_failed": "deid", "forward_failed": "forward", "requeued": "admin"}
_PIXEL_COUNTS = re.compile(r"\bframes=(\d+) ocr=(\d+)\b")  # PixelOutcome.audit_detail, as the worker records it
_RECHECK_IDS = 2_000  # ids below the newest seen that are read again: commits that came late (PostgreSQL)
_PAGE = 20_000


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


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(STAGE_BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(STAGE_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1
        self.count += 1
        self.total += seconds

    def samples(self) -> list[tuple[str, float]]:
        return [(str(b), float(n)) for b, n in zip(STAGE_BUCKETS, self.buckets)] + [("+Inf", float(self.count))]


@dataclass
class AuditTally:
    """Cumulative counts of one node's audit trail. A stage is timed from the event that starts
    it (received or released: de-identification; de-identified: forwarding) to the one that ends
    it; a job quarantined in between times nothing."""

    node: str
    labels: Labels
    received: int = 0
    quarantined: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)  # by destination
    retried: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (destination, stage)
    frames_scanned: int = 0
    frames_ocr: int = 0
    stages: dict[str, _Histogram] = field(default_factory=lambda: {s: _Histogram() for s in STAGES})
    _started: dict[str, dict[int, datetime]] = field(default_factory=lambda: {s: {} for s in STAGES})
    _last_id: int = 0
    _seen: set[int] = field(default_factory=set)  # ids within the re-read margin already counted

    def catch_up(self, session: Session) -> None:
        low = max(0, self._last_id - _RECHECK_IDS)
        while True:
            rows = session.execute(
                select(AuditEvent.id, AuditEvent.event, AuditEvent.detail, AuditEvent.job_id, AuditEvent.at, Job.node,
                       Job.destination)
                .select_from(AuditEvent).outerjoin(Job, Job.id == AuditEvent.job_id)
                .where(AuditEvent.id > low).order_by(AuditEvent.id).limit(_PAGE)).all()
            for event_id, event, detail, job_id, at, job_node, job_destination in rows:
                if event_id in self._seen:
                    continue
                self._seen.add(event_id)
                self._last_id = max(self._last_id, event_id)
                if job_node == self.node or job_id is None:  # a purged job's events still count
                    self._count(event, detail, job_id, as_utc(at), job_destination)
            if len(rows) < _PAGE:
                break
            low = rows[-1][0]
        floor = self._last_id - _RECHECK_IDS
        self._seen = {i for i in self._seen if i > floor}

    def _count(self, event: str, detail: str | None, job_id: int | None, at: datetime,
               job_destination: str | None) -> None:
        if event == "received":
            self.received += 1
            self._start("deid", job_id, at)
        elif event == "deidentified":
            self._finish("deid", job_id, at)
            self._start("forward", job_id, at)
            found = _PIXEL_COUNTS.search(detail or "")
            if found:
                self.frames_scanned += int(found.group(1))
                self.frames_ocr += int(found.group(2))
        elif event == "forwarded":
            self.forwarded[self.labels.destination(detail)] += 1
            self._finish("forward", job_id, at)
        elif event == "quarantined":
            self.quarantined += 1
            for stage in STAGES:
                self._started[stage].pop(job_id or 0, None)
        elif event in RETRY_STAGES:
            self.retried[(self.labels.destination(job_destination), RETRY_STAGES[event])] += 1
            if event == "requeued" and detail == JobState.RECEIVED.value:  # released: de-identified anew
                self._start("deid", job_id, at)

    def _start(self, stage: str, job_id: int | None, at: datetime) -> None:
        if job_id is not None:
            self._started[stage][job_id] = at

    def _finish(self, stage: str, job_id: int | None, at: datetime) -> None:
        began = self._started[stage].pop(job_id, None) if job_id is not None else None
        if began is not None:
            self.stages[stage].observe(max(0.0, (at - began).total_seconds()))


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def jobs_by_state(session: Session, node: str) -> list[tuple[JobState, str | None, int]]:
    query = (select(Job.state, Job.destination, func.count()).where(Job.node == node)
             .group_by(Job.state, Job.destination))
    return [(JobState(s), d, n) for s, d, n in session.execute(query).all()]


def jobs_per_destination(session: Session, node: str, labels: Labels) -> dict[str, dict[str, int]]:
    """Jobs per destination, then per state, for the status page."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for state, destination, count in jobs_by_state(session, node):
        row = table[labels.destination(destination)]
        row[state.value] = row.get(state.value, 0) + count
    return dict(table)


class NodeMetrics(Collector):
    """This node's metrics, brought up to date from the database at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._labels = Labels.of(settings)
        self._node = settings.node_name
        self._tally = AuditTally(self._node, self._labels)
        self._lock = threading.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def text(self) -> bytes:
        """The Prometheus text exposition, read now."""
        with self._lock:
            return generate_latest(self._registry)

    def collect(self) -> Iterator[Metric]:
        with self._sessions() as session:
            self._tally.catch_up(session)
            depth = Counter({state.value: 0 for state in JobState})
            for state, _destination, count in jobs_by_state(session, self._node):
                depth[state.value] += count
        tally, route = self._tally, self._labels.route()
        for name, value, help_text in (("received", tally.received, "Instances received and made durable."),
                                       ("quarantined", tally.quarantined, "Instances set aside (never forwarded).")):
            family = CounterMetricFamily(f"deid_node_instances_{name}", help_text, labels=["route"])
            family.add_metric([route], value)
            yield family
        forwarded = CounterMetricFamily("deid_node_instances_forwarded", "Instances a destination took.",
                                        labels=["route", "destination"])
        for destination in sorted(set(tally.forwarded) | {self._labels.destination(None)}):
            forwarded.add_metric([route, destination], tally.forwarded[destination])
        yield forwarded
        retried = CounterMetricFamily("deid_node_instances_retried", "Retries: de-identification, forward, and "
                                      "administrative (retry/release).", labels=["route", "destination", "stage"])
        keys = set(tally.retried) | {(self._labels.destination(None), s) for s in RETRY_STAGES.values()}
        for destination, stage in sorted(keys):
            retried.add_metric([route, destination, stage], tally.retried[(destination, stage)])
        yield retried
        jobs = GaugeMetricFamily("deid_node_jobs", "Jobs per state (queue depth).", labels=["route", "state"])
        for state, count in depth.items():
            jobs.add_metric([route, state], count)
        yield jobs
        stages = HistogramMetricFamily("deid_node_stage_seconds", "Seconds from received (or released) to "
                                       "de-identified (deid, queue wait included) and from there to forwarded "
                                       "(forward, retries included).", labels=["route", "stage"])
        for stage, histogram in tally.stages.items():
            stages.add_metric([route, stage], histogram.samples(), histogram.total)
        yield stages
        yield CounterMetricFamily("deid_node_pixel_frames_scanned", "Frames the pixel step looked at.",
                                  tally.frames_scanned)
        yield CounterMetricFamily("deid_node_pixel_frames_ocr", "Frames OCR read (regions or whole).",
                                  tally.frames_ocr)
