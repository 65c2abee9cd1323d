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

from sqlalchemy import Engine, Integer, Update, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from node.persist.models import AuditEvent, Job, JobState, utcnow
from node.processes import pid_alive

_CLAIMABLE_FROM = {
    JobState.PROCESSING: (JobState.RECEIVED,),
    JobState.FORWARDING: (JobState.CLEAN, JobState.FAILED),
}


def worker_identity() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


_JOBS = Job.__table__
_AUDIT = AuditEvent.__table__


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
                   _JOBS.c.forward_attempts, _JOBS.c.new_sop_instance_uid, _JOBS.c.patient_pseudonym)
    )


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    spool_file: str
    sop_class_uid: str
    attempts: int
    forward_attempts: int
    new_sop_instance_uid: str | None
    patient_pseudonym: str | None


@dataclass(frozen=True)
class QueueStatus:
    by_state: dict[str, int]
    oldest_waiting: datetime | None
    failing_by_destination: dict[str, int]


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
                    next_attempt_at=bindparam("now"), updated_at=bindparam("now"),
                    new_sop_instance_uid=bindparam("new_uid"), patient_pseudonym=bindparam("pseudonym"))
        )
        self._mark_forwarded = (
            update(_JOBS)
            .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)), _JOBS.c.lease_owner == bindparam("owner"))
            .values(state=JobState.FORWARDED, lease_owner=None, lease_until=None, last_error=None,
                    updated_at=bindparam("now"), destination=bindparam("b_destination"),
                    forward_attempts=_JOBS.c.forward_attempts + 1)
            .returning(_JOBS.c.id)
        )

    def enqueue(self, *, spool_file: str, calling_ae: str, sop_class_uid: str, sop_instance_hash: str,
                size_bytes: int) -> int:
        now = utcnow()
        with self._engine.begin() as connection:
            job_id = connection.execute(self._insert_job, dict(
                node=self.node, state=JobState.RECEIVED, spool_file=spool_file, calling_ae=calling_ae,
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
        """Requeue jobs leased by processes of this host that no longer exist (after kill -9)."""
        host = socket.gethostname()[:40]
        released = 0
        with self._sessions.begin() as session:
            leased = session.execute(
                select(Job.id, Job.state, Job.lease_owner).where(
                    Job.node == self.node, Job.state.in_([JobState.PROCESSING, JobState.FORWARDING]),
                    Job.lease_owner.like(f"{host}:%"))
            ).all()
            for job_id, state, owner in leased:
                pid = int(owner.rsplit(":", 1)[1])
                if pid_alive(pid):
                    continue
                back = JobState.RECEIVED if state == JobState.PROCESSING else JobState.CLEAN
                session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
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
                   detail: str) -> bool:
        now = utcnow()
        params = dict(job_id=job_id, owner=owner, now=now, new_uid=new_sop_instance_uid, pseudonym=patient_pseudonym)
        return self._settle_with(self._mark_clean, params, job_id, "deidentified", detail, now)

    def retry_later(self, job_id: int, owner: str, *, state: JobState, error: str, delay_seconds: float,
                    destination: str | None = None) -> bool:
        """Make the job due again after `delay_seconds`; a forward failure counts a forward attempt
        (de-identification attempts are counted when claimed)."""
        forward = destination is not None
        extra = {"destination": destination, "forward_attempts": Job.forward_attempts + 1} if forward else {}
        return self._settle(job_id, owner, "forward_failed" if forward else "deid_failed", error, state=state,
                            lease_owner=None, lease_until=None, last_error=error,
                            next_attempt_at=utcnow() + timedelta(seconds=delay_seconds), **extra)

    def wait_for_space(self, job_id: int, owner: str, *, delay_seconds: float) -> bool:
        """Put a job back that found the spool disk full: due again after `delay_seconds`, its
        claim not counted as an attempt (a full disk says nothing about the instance)."""
        return self._settle(job_id, owner, "waiting_for_space", "spool disk full", state=JobState.RECEIVED,
                            lease_owner=None, lease_until=None, last_error="spool disk full",
                            attempts=Job.attempts - 1, next_attempt_at=utcnow() + timedelta(seconds=delay_seconds))

    def mark_forwarded(self, job_ids: Sequence[int], owner: str, destination: str) -> set[int]:
        """Settle the jobs of a batch the destination took, in one transaction: one commit (one
        fsync) per batch instead of one per instance. Returns the jobs `owner` still held."""
        if not job_ids:
            return set()
        now = utcnow()
        with self._engine.begin() as connection:
            settled = set(connection.execute(self._mark_forwarded, dict(
                ids=list(job_ids), owner=owner, now=now, b_destination=destination)).scalars())
            if settled:
                connection.execute(self._insert_audit, [dict(job_id=job_id, event="forwarded", detail=destination, at=now)
                                                        for job_id in sorted(settled)])
        return settled

    def quarantine(self, job_id: int, owner: str | None, reason: str) -> bool:
        return self._settle(job_id, owner, "quarantined", reason, state=JobState.QUARANTINED, lease_owner=None,
                            lease_until=None, last_error=reason)

    def requeue(self, job_ids: Sequence[int] | None, *, from_states: Sequence[JobState], to_state: JobState) -> int:
        """Administrative retry: put jobs back with fresh attempt counters."""
        with self._sessions.begin() as session:
            condition = [Job.node == self.node, Job.state.in_(from_states)]
            if job_ids:
                condition.append(Job.id.in_(job_ids))
            ids = list(session.scalars(select(Job.id).where(*condition)))
            if ids:
                session.execute(update(Job).where(Job.id.in_(ids)).values(
                    state=to_state, attempts=0, forward_attempts=0, next_attempt_at=utcnow(), lease_owner=None,
                    lease_until=None, updated_at=utcnow()))
                session.add_all(AuditEvent(job_id=i, event="requeued", detail=to_state.value) for i in ids)
            return len(ids)

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
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.QUARANTINED:
                return False
            session.add(AuditEvent(job_id=None, event="purged",
                                   detail=f"job={job_id} sop={job.sop_instance_hash[:16]} {reason}"))
            session.delete(job)
        return True

    def status(self) -> QueueStatus:
        waiting = [JobState.RECEIVED, JobState.PROCESSING, JobState.CLEAN, JobState.FORWARDING, JobState.FAILED]
        with self._sessions() as session:
            counts = dict(session.execute(select(Job.state, func.count()).where(Job.node == self.node)
                                          .group_by(Job.state)).all())
            oldest = session.scalar(select(func.min(Job.received_at)).where(Job.node == self.node,
                                                                             Job.state.in_(waiting)))
            failing = dict(session.execute(
                select(func.coalesce(Job.destination, "-"), func.count())
                .where(Job.node == self.node, Job.state == JobState.FAILED).group_by(Job.destination)).all())
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=timezone.utc)
        return QueueStatus({s.value: counts.get(s, 0) for s in JobState}, oldest, failing)

