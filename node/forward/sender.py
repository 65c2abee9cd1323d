"""The one interface every kind of destination is reached through, and what a send can come to.

A destination kind (DICOM C-STORE, DICOMweb STOW-RS, a folder) is one class that implements
`Sender`; the factory picks the class from the destination's `kind` in config. The forwarder
knows nothing of any kind: it hands a sender a batch of clean files and settles each file by the
outcome the sender reports for it.

Outcomes say what the forwarder must do next, not what went wrong on the wire:
- DELIVERED: the destination has the instance (also a warning status that still means stored).
- WAIT: a transport problem (unreachable, busy, timed out, disk full at a folder, HTTP 5xx/429):
  nothing is wrong with the instance; wait (capped backoff) and try again, for days if need be.
  Never a reason to quarantine.
- REFUSED: the destination refused this instance for cause (presentation context not accepted,
  C-STORE 0xA9xx/0xC0xx, HTTP 4xx): no retry can succeed; quarantine with the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"
    WAIT = "wait"
    REFUSED = "refused"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    detail: str  # PHI-free: a status code, an HTTP status, a short reason

    @property
    def stored(self) -> bool:
        return self.outcome is Outcome.DELIVERED


@dataclass(frozen=True)
class CleanFile:
    """One de-identified Part-10 file ready to leave, and what a sender may need to file it."""

    path: Path
    sop_class_uid: str
    project: str = "default"
    patient: str = ""  # the pseudonym (a folder destination files by it)
    study_uid: str = ""  # the new, de-identified UIDs
    series_uid: str = ""
    sop_instance_uid: str = ""


class Sender(Protocol):
    """A destination, reached one batch at a time; one result per file, in order."""

    @property
    def name(self) -> str: ...

    def send(self, files: Sequence[CleanFile]) -> list[SendResult]: ...

    def release_if_idle(self, now: float, idle_seconds: float) -> bool:
        """Let go of an idle connection; True if one was released."""
        ...

    def close(self) -> None: ...
