"""Enqueue, claim, and settle jobs. Each method owns one short transaction.

A claim is one UPDATE over rows picked with FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite takes
its single writer lock for the UPDATE), so a job is claimed exactly once. The claim carries a
lease; a job whose lease ran out (its worker died) is claimable again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, Integer, Update, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from node.persist.db import insert_ignoring_conflicts
from node.persist.models import AuditEvent, Delivery, DeliveryState, Job, JobState, utcnow
from node.processes import pid_alive

_CLAIMABLE_FROM = {
    JobState.PROCESSING: (JobState.RECEIVED,),
}


def worker_identity() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


_JOBS = Job.__table__
_AUDIT = AuditEvent.__table__
_DELIVERIES = Delivery.__table__


def _claim_statement(to_state: JobState) -> Update:
    """The claim UPDATE for one target state, with the node, time, owner and limit as parameters."""
    due = (
        select(_JOBS.c.id)
        .where(
            _JOBS.c.node == bindparam("b_node"),
            or_(
                _JOBS.c.state.in_(bindparam("sources", expanding=True)) & (_JOBS.c.next_attempt_at <= bindparam("now")),
                (_JOBS.c.state == bindparam("to_state")) & (_JOBS.c.lease_until < bindparam("now")),
            ),
        )
        .order_by(_JOBS.c.next_attempt_at, _JOBS.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # Counting de-identification attempts at claim time means an instance that kills its
    # worker (segfault, out of memory) is seen again with a higher count, and quarantined.
    counted = {"attempts": _JOBS.c.attempts + 1} if to_state == JobState.PROCESSING else {}
    return (
        update(_JOBS)
        .where(_JOBS.c.id.in_(due))
        .values(state=bindparam("to_state"), lease_owner=bindparam("owner"), lease_until=bindparam("b_lease_until"),
                updated_at=bindparam("now"), **counted)
        .returning(_JOBS.c.id, _JOBS.c.spool_file, _JOBS.c.sop_class_uid, _JOBS.c.attempts,
                   _JOBS.c.calling_ae, _JOBS.c.called_ae, _JOBS.c.source_host, _JOBS.c.route)
    )


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    spool_file: str
    sop_class_uid: str
    attempts: int
    calling_ae: str
    called_ae: str | None
    source_host: str | None
    route: str | None  # chosen already (ingest --route, or an earlier pass), else the worker chooses


@dataclass(frozen=True)
class DestinationStatus:
    pending: int  # deliveries not yet delivered nor quarantined
    waiting_since: datetime | None  # the destination has been unreachable since then
    quarantined: int


@dataclass(frozen=True)
class QueueStatus:
    by_state: dict[str, int]
    oldest_waiting: datetime | None
    destinations: dict[str, DestinationStatus]


class JobStore:
    """The per-instance statements (enqueue, claim, settle) are built once and run on a plain
    connection: each is one short transaction whose cost is the database's, not SQL construction's
    (building an ORM statement per call cost more than the commit). Administrative calls use the
    ORM sessions."""

    def __init__(self, sessions: sessionmaker[Session], node: str) -> None:
        self._sessions = sessions
        self._engine: Engine = sessions.kw["bind"]
        self.node = node
        self._insert_job = insert(_JOBS).returning(_JOBS.c.id)
        self._insert_audit = insert(_AUDIT)
        self._claims = {state: _claim_statement(state) for state in _CLAIMABLE_FROM}
        self._mark_clean = (
            update(_JOBS)
            .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.lease_owner == bindparam("owner"))
            .values(state=JobState.CLEAN, lease_owner=None, lease_until=None, last_error=None,
                    next_attempt_at=bindparam("now"), updated_at=bindparam("now"), route=bindparam("b_route"),
                    project=bindparam("b_project"), new_sop_instance_uid=bindparam("new_uid"),
                    patient_pseudonym=bindparam("pseudonym"))
        )
        # A job released from quarantine comes back through here: destinations that have it keep
        # their delivered row, the others start over.
        self._restart_deliveries = (
            update(_DELIVERIES)
            .where(_DELIVERIES.c.job_id == bindparam("b_job_id"), _DELIVERIES.c.state == DeliveryState.QUARANTINED)
            .values(state=DeliveryState.PENDING, attempts=0, waiting_since=None, last_error=None,
                    next_attempt_at=bindparam("now"), updated_at=bindparam("now"))
        )

    def enqueue(self, *, spool_file: str, calling_ae: str, sop_class_uid: str, sop_instance_hash: str,
                size_bytes: int, called_ae: str | None = None, source_host: str | None = None,
                route: str | None = None) -> int:
        now = utcnow()
        with self._engine.begin() as connection:
            job_id = connection.execute(self._insert_job, dict(
                node=self.node, state=JobState.RECEIVED, spool_file=spool_file, calling_ae=calling_ae,
                called_ae=called_ae, source_host=source_host, route=route,
                sop_class_uid=sop_class_uid, sop_instance_hash=sop_instance_hash, size_bytes=size_bytes,
                attempts=0, forward_attempts=0, next_attempt_at=now, received_at=now, updated_at=now,
            )).scalar_one()
            connection.execute(self._insert_audit, dict(job_id=job_id, event="received", at=now,
                                                        detail=f"sop={sop_instance_hash[:16]}"))
        return int(job_id)

    def claim(self, to_state: JobState, owner: str, lease_seconds: float, limit: int = 1) -> list[ClaimedJob]:
        """Take up to `limit` due jobs (or jobs whose lease expired) into `to_state`.

        One statement: SQLite takes its write lock before reading, PostgreSQL skips rows another
        claimer has locked; either way no job is handed out twice."""
        now = utcnow()
        with self._engine.begin() as connection:
            rows = connection.execute(self._claims[to_state], dict(
                b_node=self.node, sources=list(_CLAIMABLE_FROM[to_state]), to_state=to_state, now=now, limit=limit,
                owner=owner, b_lease_until=now + timedelta(seconds=lease_seconds),
            )).all()
        return sorted((ClaimedJob(*row) for row in rows), key=lambda j: j.id)

    def extend_lease(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        """Keep holding a job that is still being worked on."""
        with self._sessions.begin() as session:
            result = session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                                     .values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
            return bool(result.rowcount)

    def release_dead_owners(self) -> int:
        """Requeue jobs and deliveries leased by processes of this host that no longer exist
        (after kill -9)."""
        host = socket.gethostname()[:40]
        released = 0
        with self._sessions.begin() as session:
            for model, leased_state, back in ((Job, JobState.PROCESSING, JobState.RECEIVED),
                                              (Delivery, DeliveryState.SENDING, DeliveryState.PENDING)):
                leased = session.execute(select(model.id, model.lease_owner).where(
                    model.node == self.node, model.state == leased_state, model.lease_owner.like(f"{host}:%"))).all()
                for row_id, owner in leased:
                    if pid_alive(int(owner.rsplit(":", 1)[1])):
                        continue
                    session.execute(update(model).where(model.id == row_id, model.lease_owner == owner)
                                    .values(state=back, lease_owner=None, lease_until=None))
                    released += 1
        return released

    def _settle(self, job_id: int, owner: str | None, event: str, detail: str | None, **values: object) -> bool:
        """Move a job on, only if `owner` still holds it (a stale worker must not overwrite)."""
        now = utcnow()
        condition = [_JOBS.c.id == job_id]
        if owner is not None:
            condition.append(_JOBS.c.lease_owner == owner)
        return self._settle_with(update(_JOBS).where(*condition).values(updated_at=now, **values), {},
                                 job_id, event, detail, now)

    def _settle_with(self, statement: Update, params: dict[str, object], job_id: int, event: str,
                     detail: str | None, now: datetime) -> bool:
        """Run a settling UPDATE and, if it moved the job, record `event` in the audit trail, in one
        transaction."""
        with self._engine.begin() as connection:
            settled = connection.execute(statement, params).rowcount
            if settled:
                connection.execute(self._insert_audit, dict(job_id=job_id, event=event, detail=detail, at=now))
        return bool(settled)

    def mark_clean(self, job_id: int, owner: str, *, new_sop_instance_uid: str, patient_pseudonym: str,
                   detail: str, route: str, project: str, destinations: Sequence[str]) -> bool:
        """The clean file is written: record the route and project, and one delivery per destination
        of the route, in the same transaction (a crash leaves the job clean with all its deliveries,
        or received with none)."""
        now = utcnow()
        params = dict(job_id=job_id, owner=owner, now=now, new_uid=new_sop_instance_uid, pseudonym=patient_pseudonym,
                      b_route=route, b_project=project)
        with self._engine.begin() as connection:
            if not connection.execute(self._mark_clean, params).rowcount:
                return False
            insert_ignoring_conflicts(connection, Delivery, [dict(
                job_id=job_id, node=self.node, destination=name, state=DeliveryState.PENDING, attempts=0,
                next_attempt_at=now, updated_at=now) for name in destinations], ["job_id", "destination"])
            connection.execute(self._restart_deliveries, dict(b_job_id=job_id, now=now))
            connection.execute(self._insert_audit, dict(job_id=job_id, event="deidentified", at=now,
                                                        detail=f"{detail} route={route}"))
        return True

    def retry_later(self, job_id: int, owner: str, *, error: str, delay_seconds: float) -> bool:
        """Make a job whose de-identification could not finish due again after `delay_seconds`
        (attempts are counted when claimed)."""
        return self._settle(job_id, owner, "deid_failed", error, state=JobState.RECEIVED,
                            lease_owner=None, lease_until=None, last_error=error,
                            next_attempt_at=utcnow() + timedelta(seconds=delay_seconds))

    def wait_for_space(self, job_id: int, owner: str, *, delay_seconds: float) -> bool:
        """Put a job back that found the spool disk full: due again after `delay_seconds`, its
        claim not counted as an attempt (a full disk says nothing about the instance)."""
        return self._settle(job_id, owner, "waiting_for_space", "spool disk full", state=JobState.RECEIVED,
                            lease_owner=None, lease_until=None, last_error="spool disk full",
                            attempts=Job.attempts - 1, next_attempt_at=utcnow() + timedelta(seconds=delay_seconds))

    def quarantine(self, job_id: int, owner: str | None, reason: str) -> bool:
        return self._settle(job_id, owner, "quarantined", reason, state=JobState.QUARANTINED, lease_owner=None,
                            lease_until=None, last_error=reason)

    def requeue(self, job_ids: Sequence[int] | None, *, from_states: Sequence[JobState], to_state: JobState) -> int:
        """Administrative retry: put jobs back with fresh attempt counters."""
        with self._sessions.begin() as session:
            condition = [Job.node == self.node, Job.state.in_(from_states)]
            if job_ids is not None:
                condition.append(Job.id.in_(job_ids))
            ids = list(session.scalars(select(Job.id).where(*condition)))
            if ids:
                session.execute(update(Job).where(Job.id.in_(ids)).values(
                    state=to_state, attempts=0, forward_attempts=0, next_attempt_at=utcnow(), lease_owner=None,
                    lease_until=None, updated_at=utcnow()))
                session.add_all(AuditEvent(job_id=i, event="requeued", detail=to_state.value) for i in ids)
            return len(ids)

    def queued_on_route(self, sop_instance_hash: str, route: str) -> bool:
        """Whether this instance (keyed hash of its SOPInstanceUID) already has a job on `route`."""
        with self._sessions() as session:
            return session.scalar(select(Job.id).where(Job.node == self.node, Job.sop_instance_hash == sop_instance_hash,
                                                       Job.route == route).limit(1)) is not None

    def get(self, job_id: int) -> Job | None:
        with self._sessions() as session:
            return session.get(Job, job_id)

    def jobs_in(self, states: Sequence[JobState], limit: int = 1000) -> list[Job]:
        with self._sessions() as session:
            return list(session.scalars(select(Job).where(Job.node == self.node, Job.state.in_(states))
                                        .order_by(Job.id).limit(limit)))

    def states_of(self, spool_files: Sequence[str]) -> dict[str, JobState]:
        """The state of each job among `spool_files` that has one (the spool sweep's question)."""
        found: dict[str, JobState] = {}
        with self._sessions() as session:
            for start in range(0, len(spool_files), 500):
                found.update((name, state) for name, state in session.execute(select(Job.spool_file, Job.state).where(
                    Job.node == self.node, Job.spool_file.in_(spool_files[start:start + 500]))))
        return found

    def expired_quarantine(self, older_than: timedelta, limit: int = 1000) -> list[Job]:
        """Quarantined jobs set aside longer than `older_than` ago."""
        with self._sessions() as session:
            return list(session.scalars(select(Job).where(
                Job.node == self.node, Job.state == JobState.QUARANTINED, Job.updated_at < utcnow() - older_than)
                .order_by(Job.id).limit(limit)))

    def purge(self, job_id: int, reason: str) -> bool:
        """Delete a quarantined job for good, leaving an audit row that says why (no PHI)."""
        with self._sessions.begin() as session:
            session.execute(delete(Delivery).where(Delivery.job_id == job_id))
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.QUARANTINED:
                return False
            session.add(AuditEvent(job_id=None, event="purged",
                                   detail=f"job={job_id} sop={job.sop_instance_hash[:16]} {reason}"))
            session.delete(job)
        return True

    def quarantined_destinations(self, job_ids: Sequence[int]) -> dict[int, list[str]]:
        """For each job, the destinations whose delivery is quarantined (none: de-identification
        set the job aside)."""
        found: dict[int, list[str]] = {job_id: [] for job_id in job_ids}
        with self._sessions() as session:
            for job_id, destination in session.execute(select(Delivery.job_id, Delivery.destination).where(
                    Delivery.job_id.in_(job_ids), Delivery.state == DeliveryState.QUARANTINED).order_by(Delivery.id)):
                found[job_id].append(destination)
        return found

    def status(self) -> QueueStatus:
        waiting = [JobState.RECEIVED, JobState.PROCESSING, JobState.CLEAN]
        open_states = [DeliveryState.PENDING, DeliveryState.SENDING]
        with self._sessions() as session:
            counts = dict(session.execute(select(Job.state, func.count()).where(Job.node == self.node)
                                          .group_by(Job.state)).all())
            oldest = session.scalar(select(func.min(Job.received_at)).where(Job.node == self.node,
                                                                             Job.state.in_(waiting)))
            per_destination = session.execute(
                select(Delivery.destination, Delivery.state, func.count(), func.min(Delivery.waiting_since))
                .where(Delivery.node == self.node, Delivery.state != DeliveryState.DELIVERED)
                .group_by(Delivery.destination, Delivery.state)).all()
        pending: dict[str, int] = {}
        since: dict[str, datetime] = {}
        quarantined: dict[str, int] = {}
        for name, state, count, waiting_since in per_destination:
            if state in open_states:
                pending[name] = pending.get(name, 0) + count
                if waiting_since is not None:
                    since[name] = min(since.get(name, _aware(waiting_since)), _aware(waiting_since))
            else:
                quarantined[name] = count
        destinations = {name: DestinationStatus(pending.get(name, 0), since.get(name), quarantined.get(name, 0))
                        for name in sorted(pending.keys() | quarantined.keys())}
        return QueueStatus({s.value: counts.get(s, 0) for s in JobState}, _aware(oldest) if oldest else None,
                           destinations)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time the node stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

