"""The patient map, UID map and date offsets: get-or-create, safe when processes and nodes race.

Originals are stored encrypted (Fernet, key derived from the node secret) and found through a
keyed hash, so a copy of the database alone does not re-identify anyone. New values come from
the keyed derivation, so racing writers propose identical rows; a unique constraint and
INSERT ... ON CONFLICT DO NOTHING leave exactly one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.deid.pseudonyms import DEFAULT_PROJECT, KeyedDerivation, MappingsUnavailable, PatientPseudonym
from node.persist.db import insert_ignoring_conflicts
from node.persist.models import AuditEvent, Patient, UidMapping

# Rows per statement: well under SQLite's limit on bound parameters, small enough for one round trip.
CHUNK = 500

T = TypeVar("T")


class MappingError(Exception):
    """A mapping cannot be created or read (conflict, wrong key); the message holds no PHI."""


class WrongSecret(MappingError):
    """The node secret is not the one that wrote this database."""


class UnknownMapping(MappingError):
    """The value asked for is in no mapping."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class OriginalCipher:
    """Encrypts originals for storage; the key is derived from the node secret."""

    def __init__(self, secret: bytes) -> None:
        key = hmac.new(secret, b"deid-node mapping encryption", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise WrongSecret(
                "cannot decrypt the stored originals: this node's secret (DEID_SECRET or secret_file) "
                "is not the one that wrote this database"
            ) from exc


@dataclass(frozen=True)
class MappingRow:
    original: str
    new: str


@dataclass(frozen=True)
class PatientRow:
    original: str
    pseudonym: str
    offset_days: int


@dataclass(frozen=True)
class Found:
    """One answer of `lookup`: which map, and both sides of the pair."""

    kind: str  # "patient" or "uid"
    original: str
    new: str
    offset_days: int | None = None


@dataclass(frozen=True)
class Scope:
    """Which part of the map to read: everything, one patient (pseudonym) or one study (new UID)."""

    patient: str | None = None
    study: str | None = None


_RECORDED_UIDS_LIMIT = 200_000


class MappingStore:
    """Reads and records one project's mappings; each call owns its short transaction.

    `derivation` is the project's (KeyedDerivation.for_project): its keyed hashes index the
    project's rows, so a row of another project is never found through them either."""

    def __init__(self, sessions: sessionmaker[Session], derivation: KeyedDerivation, cipher: OriginalCipher,
                 project: str = DEFAULT_PROJECT):
        self.sessions = sessions
        self._engine: Engine = sessions.kw["bind"]
        self.project = project
        self.derivation = derivation
        self.cipher = cipher
        self._patients: dict[str, PatientPseudonym] = {}
        self._recorded_uids: set[str] = set()  # originals this process already stored

    def patient_hash(self, original_id: str) -> str:
        return self.derivation.lookup_hash("patient", original_id)

    def uid_hash(self, original: str) -> str:
        return self.derivation.lookup_hash("uid", original)

    def patient(self, original_id: str) -> PatientPseudonym:
        """The stored pseudonym (imported or derived earlier), else record the derived one."""
        cached = self._patients.get(original_id)
        if cached is not None:
            return cached
        key = self.patient_hash(original_id)
        mine = (Patient.original_hash == key, Patient.project == self.project)
        with self.sessions.begin() as session:
            row = session.scalars(select(Patient).where(*mine)).one_or_none()
            if row is None:
                derived = self.derivation.patient(original_id)
                insert_ignoring_conflicts(
                    session,
                    Patient,
                    [dict(project=self.project, original_hash=key, original_encrypted=self.cipher.encrypt(original_id),
                          pseudonym=derived.patient_id, date_offset_days=derived.date_offset_days,
                          source="derived")],
                    None,
                )
                row = session.scalars(select(Patient).where(*mine)).one_or_none()
            if row is None:
                raise MappingError("the derived pseudonym already belongs to another patient (an imported map)")
            result = PatientPseudonym(row.pseudonym, row.pseudonym, row.date_offset_days)
        self._patients[original_id] = result
        return result

    def record_uids(self, pairs: Mapping[str, str], *, patient: str | None = None, study: str | None = None) -> None:
        """Record UID pairs handed out by the derivation, with the instance's patient pseudonym and
        new StudyInstanceUID. Rows go in keyed-hash order so that two PostgreSQL transactions
        inserting overlapping sets lock them in the same order and cannot deadlock.

        Study, series and frame-of-reference UIDs repeat in every instance of a series; a UID this
        process has stored is skipped (the first row wins anyway), saving its hash, encryption and
        insert on the per-instance path."""
        new_pairs = {old: new for old, new in pairs.items() if old not in self._recorded_uids}
        if not new_pairs:
            return
        rows = sorted(
            (dict(project=self.project, original_hash=self.uid_hash(old), original_encrypted=self.cipher.encrypt(old), new_uid=new,
                  patient_pseudonym=patient, study_uid=study) for old, new in new_pairs.items()),
            key=lambda row: row["original_hash"],
        )
        with self._engine.begin() as connection:  # Core, no ORM session: this runs for every instance
            for part in chunks(rows):
                insert_ignoring_conflicts(connection, UidMapping, part, ["original_hash"])
        if len(self._recorded_uids) > _RECORDED_UIDS_LIMIT:  # bound the memory of a long-running worker
            self._recorded_uids.clear()
        self._recorded_uids.update(new_pairs)

    def verify_secret(self) -> None:
        """Raise WrongSecret unless this node's secret decrypts what is stored.

        A node with another secret would silently derive other pseudonyms and UIDs for the same
        patients, so every command that reads or writes the map checks first.
        """
        with self.sessions() as session:
            for model in (Patient, UidMapping):
                token = session.scalar(select(model.original_encrypted).order_by(model.id).limit(1))
                if token is not None:
                    self.cipher.decrypt(token)
                    return

    def note_access(self, event: str, detail: str) -> None:
        """Leave a trace of a re-identifying read (lookup, export) in the audit trail: what kind
        and how many, never the values."""
        with self.sessions.begin() as session:
            session.add(AuditEvent(job_id=None, event=event, detail=detail))

    def lookup(self, value: str) -> list[Found]:
        """Both directions at once: `value` as an original or as a pseudonym / new UID."""
        with self.sessions() as session:
            patients = session.scalars(select(Patient).where(Patient.project == self.project, or_(
                Patient.pseudonym == value, Patient.original_hash == self.patient_hash(value))))
            found = [Found("patient", self.cipher.decrypt(p.original_encrypted), p.pseudonym, p.date_offset_days)
                     for p in patients]
            uids = session.scalars(select(UidMapping).where(UidMapping.project == self.project, or_(
                UidMapping.new_uid == value, UidMapping.original_hash == self.uid_hash(value))))
            found += [Found("uid", self.cipher.decrypt(u.original_encrypted), u.new_uid) for u in uids]
        return found

    def scope(self, *, patient: str | None = None, study: str | None = None) -> Scope:
        """Resolve an export's selection; `study` may be the original or the new StudyInstanceUID."""
        if patient is not None and study is not None:
            raise MappingError("choose one patient or one study, not both")
        with self.sessions() as session:
            if patient is not None:
                if session.scalar(select(Patient.id).where(Patient.project == self.project,
                                                           Patient.pseudonym == patient)) is None:
                    raise UnknownMapping(f"no patient has the pseudonym {patient!r}")
                return Scope(patient=patient)
            if study is None:
                return Scope()
            new = session.scalar(select(UidMapping.new_uid).where(UidMapping.project == self.project, or_(
                UidMapping.new_uid == study, UidMapping.original_hash == self.uid_hash(study))))
            if new is None or session.scalar(select(UidMapping.id).where(UidMapping.study_uid == new).limit(1)) is None:
                raise UnknownMapping("no study with that StudyInstanceUID is recorded")
            return Scope(study=new)

    def patient_rows(self, scope: Scope = Scope()) -> Iterator[PatientRow]:
        """(original id, pseudonym, date offset) per patient, for export."""
        query = select(Patient).where(Patient.project == self.project).order_by(Patient.id)
        if scope.patient is not None:
            query = query.where(Patient.pseudonym == scope.patient)
        if scope.study is not None:
            query = query.where(Patient.pseudonym.in_(
                select(UidMapping.patient_pseudonym).where(UidMapping.study_uid == scope.study)))
        with self.sessions() as session:
            for row in session.scalars(query.execution_options(yield_per=CHUNK)):
                yield PatientRow(self.cipher.decrypt(row.original_encrypted), row.pseudonym, row.date_offset_days)

    def uid_rows(self, scope: Scope = Scope()) -> Iterator[MappingRow]:
        query = select(UidMapping).where(UidMapping.project == self.project).order_by(UidMapping.id)
        if scope.patient is not None:
            query = query.where(UidMapping.patient_pseudonym == scope.patient)
        if scope.study is not None:
            query = query.where(UidMapping.study_uid == scope.study)
        with self.sessions() as session:
            for row in session.scalars(query.execution_options(yield_per=CHUNK)):
                yield MappingRow(self.cipher.decrypt(row.original_encrypted), row.new_uid)


@dataclass
class RecordingMappings:
    """The Mappings one instance sees: stored patients, derived UIDs collected for recording."""

    store: MappingStore
    uids: dict[str, str] = field(default_factory=dict)
    patient_seen: PatientPseudonym | None = None

    def patient(self, original_id: str) -> PatientPseudonym:
        try:
            self.patient_seen = self.store.patient(original_id)
        except SQLAlchemyError as exc:  # the database is down or locked: retry later, do not quarantine
            raise MappingsUnavailable(type(exc).__name__) from exc
        return self.patient_seen

    def uid(self, original: str) -> str:
        new = self.uids.get(original)
        if new is None:
            new = self.uids[original] = self.store.derivation.uid(original)
        return new

    def commit(self, study_uid: str | None = None) -> None:
        """Record the instance's UIDs; `study_uid` is its new StudyInstanceUID, for per-study export."""
        patient = self.patient_seen.patient_id if self.patient_seen else None
        self.store.record_uids(self.uids, patient=patient, study=study_uid)
