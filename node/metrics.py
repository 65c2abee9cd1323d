"""Prometheus metrics, counted from the job, delivery and audit tables.

Why from the database and not prometheus_client's multiprocess mode: the SCP, the workers and
the forwarders are separate processes that restart, and several nodes may share one PostgreSQL.
Every fact a metric counts is already written, durably, in one transaction with the move it
records (the audit trail, the deliveries table), so counting it there is exact, survives restarts
and crashes (a kill -9 loses no increment, as a process-local counter file would), and needs no
shared directory to clean.

The audit trail is read incrementally: the first scrape after the web process starts reads it
whole, each later one only the events written since (by id, re-reading a margin of recent ids,
since PostgreSQL transactions may commit out of id order). Queue depths, waiting deliveries and
delivery retries are GROUP BYs on the jobs and deliveries tables (a wait writes no audit event:
an outage would otherwise write one per instance per try).

Labels carry route and destination names, job and delivery states and stage names only: never PHI.
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
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from node.config import Settings
from node.persist.models import AuditEvent, Delivery, DeliveryState, Job, JobState

DEFAULT_ROUTE = "default"
UNROUTED = "unrouted"  # a job set aside before a route was chosen, on a node with several routes
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
STAGES = ("deid", "forward")
RETRY_STAGES = {"deid_failed": "deid", "requeued": "admin"}
_PIXEL_COUNTS = re.compile(r"\bframes=(\d+) ocr=(\d+)\b")  # PixelOutcome.audit_detail, as the worker records it
_RECHECK_IDS = 2_000  # ids below the newest seen that are read again: commits that came late (PostgreSQL)
_PAGE = 20_000
_BEFORE_ROUTING = (JobState.RECEIVED, JobState.PROCESSING)
# Job states from before deliveries (revision 0003): shown only while old rows still hold them.
RETIRED_STATES = frozenset({JobState.FORWARDING, JobState.FAILED})
_OPEN_DELIVERIES = (DeliveryState.PENDING, DeliveryState.SENDING)


@dataclass(frozen=True)
class Labels:
    """The one place that names a job's route: the route the job carries; a job that has none
    yet (set aside before routing, an old row, a purged job's events) belongs to the node's only
    route when it has one, else to `unrouted`."""

    only_route: str | None

    @classmethod
    def of(cls, settings: Settings) -> "Labels":
        return cls(settings.routes[0].name if len(settings.routes) == 1 else None)

    def route(self, recorded: str | None) -> str:
        return recorded or self.only_route or UNROUTED


def destination_of(event: str, detail: str | None) -> str:
    """The destination a delivery's audit event names: "delivered" has it as its detail,
    "delivery_quarantined" before the reason (destination names hold no colon)."""
    text = detail or ""
    return text.split(":", 1)[0] if event == "delivery_quarantined" else text


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
    """Cumulative counts of one node's audit trail, by route (and destination for deliveries).
    A stage is timed from the event that starts it (received or released: de-identification;
    de-identified: forwarding) to the one that ends it (the job forwarded: every destination has
    it); a job quarantined in between times nothing."""

    node: str
    labels: Labels
    received: Counter[str] = field(default_factory=Counter)  # by route
    quarantined: Counter[str] = field(default_factory=Counter)  # jobs, by route
    delivered: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (route, destination)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # quarantined deliveries, same keys
    retried: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (route, stage)
    frames_scanned: int = 0
    frames_ocr: int = 0
    stages: dict[tuple[str, str], _Histogram] = field(default_factory=lambda: defaultdict(_Histogram))
    _started: dict[str, dict[int, datetime]] = field(default_factory=lambda: {s: {} for s in STAGES})
    _unrouted: set[int] = field(default_factory=set)  # received jobs whose route the worker has yet to choose
    _last_id: int = 0
    _seen: set[int] = field(default_factory=set)  # ids within the re-read margin already counted

    def catch_up(self, session: Session) -> None:
        low = max(0, self._last_id - _RECHECK_IDS)
        while True:
            rows = session.execute(
                select(AuditEvent.id, AuditEvent.event, AuditEvent.detail, AuditEvent.job_id, AuditEvent.at, Job.node,
                       Job.route, Job.state)
                .select_from(AuditEvent).outerjoin(Job, Job.id == AuditEvent.job_id)
                .where(AuditEvent.id > low).order_by(AuditEvent.id).limit(_PAGE)).all()
            for event_id, event, detail, job_id, at, job_node, job_route, job_state in rows:
                if event_id in self._seen:
                    continue
                self._seen.add(event_id)
                self._last_id = max(self._last_id, event_id)
                if job_node != self.node and job_id is not None:  # a purged job's events still count
                    continue
                if event == "received" and job_route is None and job_state in _BEFORE_ROUTING:
                    self._unrouted.add(job_id)  # counted on its route once the worker has chosen it
                    self._start("deid", job_id, as_utc(at))
                else:
                    self._count(event, detail, job_id, as_utc(at), self.labels.route(job_route))
            if len(rows) < _PAGE:
                break
            low = rows[-1][0]
        floor = self._last_id - _RECHECK_IDS
        self._seen = {i for i in self._seen if i > floor}
        self._count_routed(session)

    def _count_routed(self, session: Session) -> None:
        """Count the received jobs held back whose route is now chosen, or that will have none
        (quarantined before routing, purged)."""
        if not self._unrouted:
            return
        held = sorted(self._unrouted)
        now = {job_id: (route, state) for start in range(0, len(held), 500)
               for job_id, route, state in session.execute(
                   select(Job.id, Job.route, Job.state).where(Job.id.in_(held[start:start + 500])))}
        for job_id in held:
            route, state = now.get(job_id, (None, None))
            if route is not None or state not in _BEFORE_ROUTING:
                self.received[self.labels.route(route)] += 1
                self._unrouted.discard(job_id)

    def _count(self, event: str, detail: str | None, job_id: int | None, at: datetime, route: str) -> None:
        if event == "received":
            self.received[route] += 1
            self._start("deid", job_id, at)
        elif event == "deidentified":
            self._finish("deid", route, job_id, at)
            self._start("forward", job_id, at)
            found = _PIXEL_COUNTS.search(detail or "")
            if found:
                self.frames_scanned += int(found.group(1))
                self.frames_ocr += int(found.group(2))
        elif event == "delivered":
            self.delivered[(route, destination_of(event, detail))] += 1
        elif event == "delivery_quarantined":
            self.refused[(route, destination_of(event, detail))] += 1
        elif event == "forwarded":
            self._finish("forward", route, job_id, at)
        elif event == "quarantined":
            self.quarantined[route] += 1
            for stage in STAGES:
                self._started[stage].pop(job_id or 0, None)
        elif event in RETRY_STAGES:
            self.retried[(route, RETRY_STAGES[event])] += 1
            if event == "requeued" and detail == JobState.RECEIVED.value:  # released: de-identified anew
                self._start("deid", job_id, at)

    def _start(self, stage: str, job_id: int | None, at: datetime) -> None:
        if job_id is not None:
            self._started[stage][job_id] = at

    def _finish(self, stage: str, route: str, job_id: int | None, at: datetime) -> None:
        began = self._started[stage].pop(job_id, None) if job_id is not None else None
        if began is not None:
            self.stages[(route, stage)].observe(max(0.0, (at - began).total_seconds()))


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class DeliveryCount:
    """Deliveries of one route to one destination in one state, read from the deliveries table."""

    route: str
    destination: str
    state: DeliveryState
    count: int
    waiting: int  # open deliveries the destination could not take yet (waiting_since set)
    retries: int  # tries beyond the first: failed tries of open deliveries, all but the last of settled ones
    waiting_since: datetime | None


def jobs_by_route_and_state(session: Session, node: str, labels: Labels) -> Counter[tuple[str, JobState]]:
    query = select(Job.route, Job.state, func.count()).where(Job.node == node).group_by(Job.route, Job.state)
    counts: Counter[tuple[str, JobState]] = Counter()
    for route, state, count in session.execute(query).all():
        counts[(labels.route(route), JobState(state))] += count
    return counts


def deliveries_by_route(session: Session, node: str, labels: Labels) -> list[DeliveryCount]:
    open_row = Delivery.state.in_(_OPEN_DELIVERIES)
    retries = case((open_row, Delivery.attempts), (Delivery.attempts > 0, Delivery.attempts - 1), else_=0)
    query = (select(Job.route, Delivery.destination, Delivery.state, func.count(),
                    func.count(Delivery.waiting_since), func.coalesce(func.sum(retries), 0),
                    func.min(Delivery.waiting_since))
             .join(Job, Job.id == Delivery.job_id).where(Delivery.node == node)
             .group_by(Job.route, Delivery.destination, Delivery.state))
    counts = []
    for route, destination, state, count, waiting, tries, since in session.execute(query).all():
        if DeliveryState(state) not in _OPEN_DELIVERIES:  # a delivery refused after waiting keeps its waiting_since
            waiting, since = 0, None
        counts.append(DeliveryCount(labels.route(route), destination, DeliveryState(state), count, waiting,
                                    int(tries), as_utc(since) if since is not None else None))
    return counts


class NodeMetrics(Collector):
    """This node's metrics, brought up to date from the database at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._labels = Labels.of(settings)
        self._node = settings.node_name
        self._routes = {route.name: route.destinations for route in settings.routes}
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
            jobs = jobs_by_route_and_state(session, self._node, self._labels)
            deliveries = deliveries_by_route(session, self._node, self._labels)
        tally = self._tally
        # every configured route and (route, destination) shows from the first scrape, at 0
        routes = sorted(set(self._routes) | set(tally.received) | {r for r, _ in jobs})
        pairs = sorted({(r, d) for r, names in self._routes.items() for d in names} | set(tally.delivered)
                       | set(tally.refused) | {(c.route, c.destination) for c in deliveries})
        for name, counts, help_text in (
                ("received", tally.received, "Instances received and made durable, by route."),
                ("quarantined", tally.quarantined, "Instances set aside (de-identification failed, or a "
                                                   "destination refused them), by route.")):
            family = CounterMetricFamily(f"deid_node_instances_{name}", help_text, labels=["route"])
            for route in routes:
                family.add_metric([route], counts[route])
            yield family
        for name, counts, help_text in (
                ("delivered", tally.delivered, "Instances a destination took."),
                ("quarantined", tally.refused, "Instances a destination refused for cause, or that waited "
                                               "for it too long.")):
            family = CounterMetricFamily(f"deid_node_deliveries_{name}", help_text, labels=["route", "destination"])
            for route, destination in pairs:
                family.add_metric([route, destination], counts[(route, destination)])
            yield family
        retried = CounterMetricFamily("deid_node_deliveries_retried", "Tries beyond the first of the deliveries "
                                      "the table holds (a release starts a refused delivery over).",
                                      labels=["route", "destination"])
        waiting = GaugeMetricFamily("deid_node_deliveries_waiting", "Deliveries waiting for a destination that "
                                    "could not take them yet.", labels=["route", "destination"])
        since = GaugeMetricFamily("deid_node_destination_waiting_since_seconds", "Unix time of the oldest "
                                  "waiting delivery's first failed try (absent: nothing waits).",
                                  labels=["route", "destination"])
        retry_counts: Counter[tuple[str, str]] = Counter()
        waiting_counts: Counter[tuple[str, str]] = Counter()
        oldest: dict[tuple[str, str], datetime] = {}
        for c in deliveries:
            key = (c.route, c.destination)
            retry_counts[key] += c.retries
            waiting_counts[key] += c.waiting
            if c.waiting_since is not None:
                oldest[key] = min(oldest.get(key, c.waiting_since), c.waiting_since)
        for key in pairs:
            retried.add_metric(list(key), retry_counts[key])
            waiting.add_metric(list(key), waiting_counts[key])
            if key in oldest:
                since.add_metric(list(key), oldest[key].timestamp())
        yield from (retried, waiting, since)
        stage_retries = CounterMetricFamily("deid_node_instances_retried", "Retries of de-identification and "
                                            "administrative ones (release), by route.", labels=["route", "stage"])
        for route in routes:
            for stage in sorted(set(RETRY_STAGES.values())):
                stage_retries.add_metric([route, stage], tally.retried[(route, stage)])
        yield stage_retries
        job_depth = GaugeMetricFamily("deid_node_jobs", "Jobs per route and state (queue depth).",
                                      labels=["route", "state"])
        for route in routes:
            for state in JobState:
                if jobs[(route, state)] or state not in RETIRED_STATES:
                    job_depth.add_metric([route, state.value], jobs[(route, state)])
        yield job_depth
        delivery_depth = GaugeMetricFamily("deid_node_deliveries", "Deliveries per route, destination and state.",
                                           labels=["route", "destination", "state"])
        by_state = Counter({(c.route, c.destination, c.state): c.count for c in deliveries})
        for route, destination in pairs:
            for state in DeliveryState:
                delivery_depth.add_metric([route, destination, state.value], by_state[(route, destination, state)])
        yield delivery_depth
        stages = HistogramMetricFamily("deid_node_stage_seconds", "Seconds from received (or released) to "
                                       "de-identified (deid, queue wait included) and from there to delivered to "
                                       "every destination of the route (forward, waits included).",
                                       labels=["route", "stage"])
        for (route, stage), histogram in sorted(tally.stages.items()):
            stages.add_metric([route, stage], histogram.samples(), histogram.total)
        yield stages
        yield CounterMetricFamily("deid_node_pixel_frames_scanned", "Frames the pixel step looked at.",
                                  tally.frames_scanned)
        yield CounterMetricFamily("deid_node_pixel_frames_ocr", "Frames OCR read (regions or whole).",
                                  tally.frames_ocr)
