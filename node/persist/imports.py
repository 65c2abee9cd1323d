"""Importing a patient map (`id_old,id_new[,offset_days]`, the CSV that MIDI-B and TCIA use).

All or nothing: every row is checked against the file itself and against the stored map before
a single row is written, in the same transaction that writes them, so a rejected file leaves
the database as it was. Problems are reported by CSV line number and never quote the values,
which are identifiers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.persist.mappings import MappingError, MappingStore, chunks
from node.persist.models import Patient

REQUIRED = ("id_old", "id_new")
OPTIONAL = ("offset_days",)
MAX_LENGTH = 64  # LO, the VR of PatientID
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")  # the value separator and control characters


@dataclass(frozen=True)
class MapRow:
    line: int  # line number in the file, the header being line 1
    original: str
    pseudonym: str
    offset_days: int | None  # None: derive it as for any other patient


@dataclass(frozen=True)
class Problem:
    line: int | None  # None: the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class ImportRejected(MappingError):
    """The file has problems; nothing was imported."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"nothing imported: {len(problems)} problem(s) in the patient map")
        self.problems = list(problems)


@dataclass(frozen=True)
class ImportResult:
    imported: int
    already_present: int


@dataclass(frozen=True)
class PatientMap:
    """A parsed file: the rows that can be checked against the database, and what is wrong."""

    rows: list[MapRow]
    problems: list[Problem]


def read_patient_map(stream: TextIO) -> PatientMap:
    """Parse and check the file on its own: shape, values, and duplicates inside it.

    Raises ImportRejected at once only when the file cannot be read as a map at all (header,
    CSV syntax, encoding); row problems are collected so that one run reports all of them.
    """
    problems: list[Problem] = []
    reader = csv.reader(stream, strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in REQUIRED if name not in header]
        unknown = [name for name in header if name not in REQUIRED + OPTIONAL]
        if missing or unknown or len(set(header)) != len(header):
            raise ImportRejected([Problem(1, f"the header must be {','.join(REQUIRED)}[,{OPTIONAL[0]}]")])
        rows = [row for fields in reader if (row := _parse(reader.line_num, header, fields, problems))]
    except (csv.Error, UnicodeDecodeError) as exc:
        where = Problem(reader.line_num or 1, f"not readable as UTF-8 CSV ({type(exc).__name__})")
        raise ImportRejected([*problems, where]) from exc
    if not rows and not problems:
        problems.append(Problem(None, "the file holds no rows"))
    problems += _duplicates(rows, "original", "id_old") + _duplicates(rows, "pseudonym", "id_new")
    return PatientMap(rows, problems)


def _parse(line: int, header: list[str], fields: list[str], problems: list[Problem]) -> MapRow | None:
    if not any(f.strip() for f in fields):
        return None  # a blank line
    if len(fields) != len(header):
        problems.append(Problem(line, f"{len(fields)} fields, the header has {len(header)}"))
        return None
    values = {name: value.strip() for name, value in zip(header, fields)}
    found = [_invalid(name, values[name]) for name in REQUIRED]
    offset = None
    if values.get("offset_days"):
        try:
            offset = int(values["offset_days"])
        except ValueError:
            found.append("offset_days is not a whole number of days")
    found = [f for f in found if f]
    problems += (Problem(line, f) for f in found)
    return None if found else MapRow(line, values["id_old"], values["id_new"], offset)


def _invalid(name: str, value: str) -> str | None:
    if not value:
        return f"{name} is empty"
    if len(value) > MAX_LENGTH:
        return f"{name} is longer than {MAX_LENGTH} characters"
    if _FORBIDDEN.search(value):
        return f"{name} holds a backslash or a control character"
    return None


def _duplicates(rows: Iterable[MapRow], attribute: str, column: str) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for row in rows:
        value = getattr(row, attribute)
        if value in first:
            problems.append(Problem(row.line, f"{column} repeats line {first[value]}"))
        else:
            first[value] = row.line
    return problems


def import_patient_map(store: MappingStore, patient_map: PatientMap) -> ImportResult:
    """Write the rows as source "imported", or raise ImportRejected with every problem of the
    file and every conflict with the stored map, and write nothing.

    A row already stored exactly as given is counted, not written again, so importing the
    same file twice is harmless.
    """
    store.verify_secret()  # another secret would hash originals differently and miss every conflict
    rows = patient_map.rows
    hashes = {row.line: store.patient_hash(row.original) for row in rows}
    try:
        with store.sessions.begin() as session:
            by_hash, by_pseudonym = _stored(session, hashes.values(), [row.pseudonym for row in rows])
            problems, new = list(patient_map.problems), []
            for row in rows:
                problem = _conflict(row, by_hash.get(hashes[row.line]), by_pseudonym.get(row.pseudonym))
                if problem:
                    problems.append(Problem(row.line, problem))
                elif hashes[row.line] not in by_hash:
                    new.append(row)
            if problems:
                raise ImportRejected(sorted(problems, key=lambda p: p.line or 0))
            for part in chunks(new):
                session.execute(Patient.__table__.insert(), [_record(store, row, hashes[row.line]) for row in part])
    except IntegrityError as exc:
        raise MappingError("the patient map changed during the import (another node?); nothing imported, "
                           "run it again") from exc
    return ImportResult(imported=len(new), already_present=len(rows) - len(new))


def _stored(session: Session, hashes: Iterable[str], pseudonyms: Sequence[str]
            ) -> tuple[dict[str, Patient], dict[str, Patient]]:
    by_hash: dict[str, Patient] = {}
    by_pseudonym: dict[str, Patient] = {}
    for part in chunks(list(hashes)):
        by_hash.update((p.original_hash, p) for p in session.scalars(select(Patient).where(
            Patient.original_hash.in_(part))))
    for part in chunks(pseudonyms):
        by_pseudonym.update((p.pseudonym, p) for p in session.scalars(select(Patient).where(
            Patient.pseudonym.in_(part))))
    return by_hash, by_pseudonym


def _conflict(row: MapRow, same_original: Patient | None, same_pseudonym: Patient | None) -> str | None:
    if same_original is not None:
        if same_original.pseudonym != row.pseudonym:
            return "id_old already has another pseudonym in this database"
        if row.offset_days is not None and row.offset_days != same_original.date_offset_days:
            return "id_old already has another date offset in this database"
        return None
    if same_pseudonym is not None:
        return "id_new is already the pseudonym of another patient in this database"
    return None


def _record(store: MappingStore, row: MapRow, key: str) -> dict[str, object]:
    offset = row.offset_days if row.offset_days is not None else store.derivation.date_offset_days(row.original)
    return dict(project=store.project, original_hash=key, original_encrypted=store.cipher.encrypt(row.original),
                pseudonym=row.pseudonym,
                date_offset_days=offset, source="imported")
