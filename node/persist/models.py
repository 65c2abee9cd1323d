"""Typed tables. Originals are stored encrypted and indexed by a keyed hash, never in clear."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (BigInteger, DateTime, Enum, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class JobState(str, enum.Enum):
    """Where an instance is on its way through the node."""

    RECEIVED = "received"  # durable in the spool, waiting for a worker
    PROCESSING = "processing"  # a worker holds a lease on it
    CLEAN = "clean"  # de-identified file written; its deliveries are under way
    FORWARDING = "forwarding"  # before deliveries (revision 0003): no longer entered
    FAILED = "failed"  # before deliveries (revision 0003): no longer entered
    FORWARDED = "forwarded"  # every destination of its route has it; spool copies deleted
    QUARANTINED = "quarantined"  # kept aside with a reason (de-identification, or a delivery refused)


class DeliveryState(str, enum.Enum):
    """Where one instance is on its way to one destination."""

    PENDING = "pending"  # due at next_attempt_at (waiting_since set while the destination is unreachable)
    SENDING = "sending"  # a forwarder holds a lease on it
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"  # refused for cause, or waited for longer than forward.give_up_after_seconds


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, name="job_state", values_callable=lambda e: [m.value for m in e], native_enum=False,
             length=16)
    )
    spool_file: Mapped[str] = mapped_column(String(255))  # name inside the node's spool directory
    calling_ae: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))  # a registered UID, not PHI
    sop_instance_hash: Mapped[str] = mapped_column(String(64))  # keyed hash of the original SOPInstanceUID
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # de-identification attempts
    forward_attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64))
    new_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(64))  # before deliveries (revision 0003)
    called_ae: Mapped[str | None] = mapped_column(String(16))
    source_host: Mapped[str | None] = mapped_column(String(64))  # the caller's address
    route: Mapped[str | None] = mapped_column(String(64))  # set by the worker (or by ingest --route)
    project: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)  # PHI-free reasons only
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_jobs_claim", "state", "next_attempt_at"),
                      Index("ix_jobs_sop_instance_hash", "sop_instance_hash"))


class Delivery(Base):
    """One instance to one destination: delivered, retried with backoff and quarantined on its own,
    so a destination that is down holds back no other."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                        ForeignKey("jobs.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(
        Enum(DeliveryState, name="delivery_state", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=16)
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # first WAIT of a run
    last_error: Mapped[str | None] = mapped_column(Text)  # PHI-free reasons only
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "destination", name="uq_deliveries_job_destination"),
                      Index("ix_deliveries_claim", "destination", "state", "next_attempt_at"))


class Patient(Base):
    """One original patient: pseudonym and date offset, the same for every node sharing this table."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    original_hash: Mapped[str] = mapped_column(String(64), unique=True)
    original_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    date_offset_days: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # "derived" or "imported"
    project: Mapped[str] = mapped_column(String(64), server_default="default", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UidMapping(Base):
    """One original UID and its replacement, the same for every node sharing this table."""

    __tablename__ = "uids"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    original_hash: Mapped[str] = mapped_column(String(64), unique=True)
    original_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    new_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # Pseudonymous context of the instance that first brought this UID, so a patient's or a
    # study's part of the map can be exported on its own.
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)  # the new StudyInstanceUID
    project: Mapped[str] = mapped_column(String(64), server_default="default", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """What happened to an instance, in pseudonyms and hashes only."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
