"""Deliveries: one row per (instance, destination), claimed and settled by that destination's
forwarder alone, so a destination that is down holds back no other.

A job is done when every one of its deliveries is: forwarded when all were delivered (its spool
copies may go), quarantined when none is still open and one was quarantined. Settling a batch
locks its jobs' rows first, so two forwarders finishing the last two deliveries of one job at the
same moment cannot both miss that the job is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Integer, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from node.persist.models import AuditEvent, Delivery, DeliveryState, Job, JobState, utcnow

_JOBS = Job.__table__
_DELIVERIES = Delivery.__table__
_OPEN = (DeliveryState.PENDING, DeliveryState.SENDING)


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    job_id: int
    attempts: int
    waiting_since: datetime | None
    spool_file: str
    sop_class_uid: str
    project: str
    patient_pseudonym: str
    new_sop_instance_uid: str


@dataclass(frozen=True)
class Waiting:
    """A delivery the destination could not take now: due again after `delay_seconds`."""

    delivery: ClaimedDelivery
    error: str
    delay_seconds: float


@dataclass(frozen=True)
class Refused:
    delivery: ClaimedDelivery
    reason: str


@dataclass(frozen=True)
class FinishedJob:
    id: int
    spool_file: str
    state: JobState  # FORWARDED or QUARANTINED
    reason: str | None = None


class DeliveryStore:
    def __init__(self, sessions: sessionmaker[Session], node: str) -> None:
        self._engine: Engine = sessions.kw["bind"]
        self.node = node
        due = (
            select(_DELIVERIES.c.id)
            .where(
                _DELIVERIES.c.node == bindparam("b_node"),
                _DELIVERIES.c.destination == bindparam("b_destination"),
                or_((_DELIVERIES.c.state == DeliveryState.PENDING) & (_DELIVERIES.c.next_attempt_at <= bindparam("now")),
                    (_DELIVERIES.c.state == DeliveryState.SENDING) & (_DELIVERIES.c.lease_until < bindparam("now"))),
            )
            .order_by(_DELIVERIES.c.next_attempt_at, _DELIVERIES.c.id)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        self._claim = (
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_(due))
            .values(state=DeliveryState.SENDING, lease_owner=bindparam("owner"),
                    lease_until=bindparam("b_lease_until"), updated_at=bindparam("now"))
            .returning(_DELIVERIES.c.id, _DELIVERIES.c.job_id, _DELIVERIES.c.attempts, _DELIVERIES.c.waiting_since)
        )
        self._jobs_of = select(_JOBS.c.id, _JOBS.c.spool_file, _JOBS.c.sop_class_uid, _JOBS.c.project,
                               _JOBS.c.patient_pseudonym, _JOBS.c.new_sop_instance_uid).where(
            _JOBS.c.id.in_(bindparam("ids", expanding=True)))
        held = (_DELIVERIES.c.id == bindparam("delivery_id"), _DELIVERIES.c.lease_owner == bindparam("owner"))
        self._delivered = update(_DELIVERIES).where(*held).values(
            state=DeliveryState.DELIVERED, lease_owner=None, lease_until=None, last_error=None, waiting_since=None,
            attempts=_DELIVERIES.c.attempts + 1, updated_at=bindparam("now"))
        self._wait = update(_DELIVERIES).where(*held).values(
            state=DeliveryState.PENDING, lease_owner=None, lease_until=None, last_error=bindparam("error"),
            attempts=_DELIVERIES.c.attempts + 1, next_attempt_at=bindparam("due"),
            waiting_since=func.coalesce(_DELIVERIES.c.waiting_since, bindparam("now")), updated_at=bindparam("now"))
        self._quarantine = update(_DELIVERIES).where(*held).values(
            state=DeliveryState.QUARANTINED, lease_owner=None, lease_until=None, last_error=bindparam("error"),
            attempts=_DELIVERIES.c.attempts + 1, updated_at=bindparam("now"))
        self._insert_audit = insert(AuditEvent.__table__)

    def claim(self, destination: str, owner: str, lease_seconds: float, limit: int) -> list[ClaimedDelivery]:
        """Up to `limit` due deliveries to `destination` (or ones whose forwarder died)."""
        now = utcnow()
        with self._engine.begin() as connection:
            rows = connection.execute(self._claim, dict(
                b_node=self.node, b_destination=destination, now=now, limit=limit, owner=owner,
                b_lease_until=now + timedelta(seconds=lease_seconds))).all()
            if not rows:
                return []
            jobs = {row.id: row for row in connection.execute(self._jobs_of, dict(ids=[r.job_id for r in rows]))}
        claimed = [ClaimedDelivery(row.id, row.job_id, row.attempts, row.waiting_since, jobs[row.job_id].spool_file,
                                   jobs[row.job_id].sop_class_uid, jobs[row.job_id].project or "default",
                                   jobs[row.job_id].patient_pseudonym or "", jobs[row.job_id].new_sop_instance_uid or "")
                   for row in rows]
        return sorted(claimed, key=lambda d: d.id)

    def settle(self, destination: str, owner: str, *, delivered: Sequence[ClaimedDelivery],
               waiting: Sequence[Waiting], refused: Sequence[Refused]) -> list[FinishedJob]:
        """Settle a batch in one transaction (one commit per batch, not per instance); deliveries
        `owner` no longer holds are left alone. Returns the jobs this batch finished."""
        now = utcnow()
        job_ids = sorted({d.job_id for d in delivered} | {w.delivery.job_id for w in waiting}
                         | {r.delivery.job_id for r in refused})
        if not job_ids:
            return []
        with self._engine.begin() as connection:
            # FOR UPDATE, in id order: concurrent settlers of one job take turns (PostgreSQL;
            # SQLite has one writer anyway).
            connection.execute(select(_JOBS.c.id).where(_JOBS.c.id.in_(job_ids)).order_by(_JOBS.c.id).with_for_update())
            audit = []
            touched = set()
            for d in delivered:
                if connection.execute(self._delivered, dict(delivery_id=d.id, owner=owner, now=now)).rowcount:
                    touched.add(d.job_id)
                    audit.append(dict(job_id=d.job_id, event="delivered", detail=destination, at=now))
            for w in waiting:
                connection.execute(self._wait, dict(delivery_id=w.delivery.id, owner=owner, now=now, error=w.error,
                                                    due=now + timedelta(seconds=w.delay_seconds)))
            for r in refused:
                if connection.execute(self._quarantine, dict(delivery_id=r.delivery.id, owner=owner, now=now,
                                                             error=r.reason)).rowcount:
                    touched.add(r.delivery.job_id)
                    audit.append(dict(job_id=r.delivery.job_id, event="delivery_quarantined",
                                      detail=f"{destination}: {r.reason}", at=now))
            finished = self._finish_jobs(connection, sorted(touched), now)
            audit += [dict(job_id=job.id, event=job.state.value, detail=job.reason, at=now) for job in finished]
            if audit:
                connection.execute(self._insert_audit, audit)
        return finished

    def _finish_jobs(self, connection: Connection, job_ids: Sequence[int], now: datetime) -> list[FinishedJob]:
        """Jobs with no open delivery left: forwarded if every delivery was delivered, else
        quarantined with the first quarantined delivery's reason."""
        if not job_ids:
            return []
        deliveries: dict[int, list[tuple[str, DeliveryState, str | None]]] = {}
        for job_id, name, state, error in connection.execute(
                select(_DELIVERIES.c.job_id, _DELIVERIES.c.destination, _DELIVERIES.c.state, _DELIVERIES.c.last_error)
                .where(_DELIVERIES.c.job_id.in_(job_ids)).order_by(_DELIVERIES.c.id)):
            deliveries.setdefault(job_id, []).append((name, DeliveryState(state), error))
        spool_files = dict(connection.execute(select(_JOBS.c.id, _JOBS.c.spool_file).where(
            _JOBS.c.id.in_(job_ids), _JOBS.c.state == JobState.CLEAN)).all())
        finished = []
        for job_id, spool_file in sorted(spool_files.items()):
            rows = deliveries.get(job_id, [])
            if any(state in _OPEN for _, state, _ in rows):
                continue
            refused = [(name, error) for name, state, error in rows if state == DeliveryState.QUARANTINED]
            state = JobState.QUARANTINED if refused else JobState.FORWARDED
            reason = f"delivery to {refused[0][0]}: {refused[0][1]}" if refused else None
            connection.execute(update(_JOBS).where(_JOBS.c.id == job_id).values(
                state=state, last_error=reason, updated_at=now))
            finished.append(FinishedJob(job_id, spool_file, state, reason))
        return finished

    def make_due(self, destination: str | None = None) -> int:
        """Administrative retry: every open delivery (to `destination`) is due now, its backoff
        forgotten (its waiting_since kept: the age limit still counts from the first failure)."""
        condition = [_DELIVERIES.c.node == self.node, _DELIVERIES.c.state == DeliveryState.PENDING]
        if destination is not None:
            condition.append(_DELIVERIES.c.destination == destination)
        with self._engine.begin() as connection:
            return connection.execute(update(_DELIVERIES).where(*condition).values(
                next_attempt_at=utcnow(), updated_at=utcnow())).rowcount
