"""Keyed derivation of every replacement value: UIDs, patient pseudonyms and date offsets.

Each value is an HMAC of the original under the node's secret, so any worker on any node that
shares the secret derives the same answer without asking anyone (consistency without
coordination), while someone who holds only the original cannot recompute it (unlike an
unsalted hash). The database records what was handed out, for export and re-identification,
and may override a derivation (an imported patient map).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Protocol

MAX_UID_LENGTH = 64
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class PatientPseudonym:
    """What replaces one patient's identity in every instance of that patient."""

    patient_id: str
    patient_name: str
    date_offset_days: int


class MappingsUnavailable(Exception):
    """The mapping store cannot answer now (database down or locked): retry, do not quarantine."""


class Mappings(Protocol):
    """Where the metadata step gets replacement values; implemented by derivation or a store.
    A store that cannot answer raises MappingsUnavailable."""

    def patient(self, original_id: str) -> PatientPseudonym: ...

    def uid(self, original: str) -> str: ...


class KeyedDerivation:
    """Pure functions of (secret, original): the source of truth for new identities."""

    def __init__(
        self,
        secret: bytes,
        *,
        uid_root: str = "2.25",
        pseudonym_pattern: str = "ANON-{digest}",
        offset_min_days: int = -3650,
        offset_max_days: int = -365,
    ) -> None:
        if offset_max_days < offset_min_days:
            raise ValueError("offset_max_days < offset_min_days")
        self._secret = secret
        self.uid_root = uid_root.rstrip(".")
        self.pseudonym_pattern = pseudonym_pattern
        self.offset_min_days = offset_min_days
        self.offset_max_days = offset_max_days

    def for_project(self, project: str) -> "KeyedDerivation":
        """The derivation of one project: keyed by an HMAC of the project's name under the node
        secret, so the same patient gets unrelated pseudonyms, UIDs and offsets in two projects.
        Project `default` keeps the node secret itself: what was derived before projects stays valid."""
        if project == DEFAULT_PROJECT:
            return self
        key = hmac.new(self._secret, f"project\x00{project}".encode(), hashlib.sha256).hexdigest().encode()
        return KeyedDerivation(key, uid_root=self.uid_root, pseudonym_pattern=self.pseudonym_pattern,
                               offset_min_days=self.offset_min_days, offset_max_days=self.offset_max_days)

    def digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def lookup_hash(self, purpose: str, value: str) -> str:
        """A keyed hash for indexing originals in the database and naming them in logs."""
        return self.digest(purpose, value).hex()

    def uid(self, original: str) -> str:
        """A valid DICOM UID (<= 64 chars, no leading zeros) under the configured root."""
        number = int.from_bytes(self.digest("uid", original)[:16], "big")
        if self.uid_root == "2.25":
            return f"2.25.{number}"
        room = MAX_UID_LENGTH - len(self.uid_root) - 1
        digits = str(number)[:room].lstrip("0") or "1"
        return f"{self.uid_root}.{digits}"

    def patient_id(self, original_id: str) -> str:
        raw = self.digest("patient", original_id)
        digest = base64.b32encode(raw).decode()[:10]
        digits = str(int.from_bytes(raw[:8], "big"))[-10:].zfill(10)
        return self.pseudonym_pattern.format(digest=digest, digits=digits)[:64]

    def date_offset_days(self, original_id: str) -> int:
        span = self.offset_max_days - self.offset_min_days + 1
        raw = int.from_bytes(self.digest("date-offset", original_id)[:8], "big")
        return self.offset_min_days + raw % span

    def patient(self, original_id: str) -> PatientPseudonym:
        pseudonym = self.patient_id(original_id)
        return PatientPseudonym(pseudonym, pseudonym, self.date_offset_days(original_id))


@dataclass
class DerivedMappings:
    """Mappings straight from the derivation, remembering what it handed out.

    The worker records `uids_seen` after an instance is de-identified; tests and benchmarks use
    it as the real derivation without a database.
    """

    derivation: KeyedDerivation
    uids_seen: dict[str, str] = field(default_factory=dict)
    patients_seen: dict[str, PatientPseudonym] = field(default_factory=dict)

    def patient(self, original_id: str) -> PatientPseudonym:
        if original_id not in self.patients_seen:
            self.patients_seen[original_id] = self.derivation.patient(original_id)
        return self.patients_seen[original_id]

    def uid(self, original: str) -> str:
        new = self.uids_seen.get(original)
        if new is None:
            new = self.uids_seen[original] = self.derivation.uid(original)
        return new
