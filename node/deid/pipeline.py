"""One instance through de-identification: read, pixels (if the policy says), metadata, write.

Pixels go first because the pixel step looks for the patient's own header values in the image.
After the metadata step, the last look (node/deid/residual.py) reads every text value left against
the header PHI collected before cleaning; PHI still there fails the instance. Any failure raises DeidentificationError with a PHI-free reason; the worker quarantines the
instance (fail closed) rather than forward something half-cleaned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom

from node.deid.metadata import MetadataDeidentifier, MetadataReport
from node.deid.part10 import part10_pieces
from node.deid.phi import collect_header_phi
from node.deid.pixels import PixelCleaner, PixelCleaningError, PixelOutcome
from node.deid.pseudonyms import Mappings, MappingsUnavailable
from node.deid.residual import LastLook, ResidualPhi


class DeidentificationError(Exception):
    """The instance cannot be de-identified; the message is a PHI-free reason for quarantine."""


@dataclass(frozen=True)
class DeidOutcome:
    pieces: list[bytes]  # the clean instance, a DICOM Part 10 file in pieces to write in turn
    new_sop_instance_uid: str
    new_study_instance_uid: str | None
    patient_pseudonym: str
    metadata: MetadataReport
    pixels: PixelOutcome | None

    @property
    def data(self) -> bytes:
        """The whole file as one bytes object (a copy: to read it back, not to write it)."""
        return b"".join(self.pieces)


class Deidentifier:
    def __init__(
        self, metadata: MetadataDeidentifier, pixels: PixelCleaner | None, last_look: LastLook | None = None
    ) -> None:
        self.metadata = metadata
        self.pixels = pixels
        self.last_look = last_look if last_look is not None else LastLook(metadata.profile.text)

    def run_file(self, path: Path | BinaryIO, mappings: Mappings) -> DeidOutcome:
        return self.run(read_instance(path), mappings)

    def run(self, ds: pydicom.Dataset, mappings: Mappings) -> DeidOutcome:
        """De-identify `ds` in place; any failure but an unavailable store quarantines."""
        try:
            return self._run(ds, mappings)
        except (DeidentificationError, MappingsUnavailable):
            raise
        except PixelCleaningError as exc:
            raise DeidentificationError(f"pixel step: {exc}") from exc
        except ResidualPhi as exc:
            raise DeidentificationError(str(exc)) from exc
        except RecursionError as exc:
            raise DeidentificationError("dataset nested too deeply") from exc
        except Exception as exc:  # noqa: BLE001 - malformed input surfaces anywhere: fail closed
            raise DeidentificationError(f"de-identification failed ({type(exc).__name__})") from exc

    def _run(self, ds: pydicom.Dataset, mappings: Mappings) -> DeidOutcome:
        _require(ds)
        phi = collect_header_phi(ds)
        pixel_outcome = self.pixels.clean(ds, phi) if self.pixels is not None else None
        report = self.metadata.apply(ds, mappings, phi)
        self.last_look.check(ds, phi)
        pieces = part10_pieces(ds)
        study = str(ds.StudyInstanceUID) if "StudyInstanceUID" in ds else None
        return DeidOutcome(pieces, str(ds.SOPInstanceUID), study, report.patient.patient_id, report, pixel_outcome)


def read_instance(path: Path | BinaryIO) -> pydicom.Dataset:
    """A received file as a dataset; DeidentificationError (PHI-free) when it is not DICOM."""
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes pydicom raise
        raise DeidentificationError(f"unreadable DICOM file ({type(exc).__name__})") from exc


def _require(ds: pydicom.Dataset) -> None:
    """Refuse what no research PACS can file: an instance must say what it is, which one, and
    whose (PatientID is Type 2: present, possibly empty)."""
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise DeidentificationError(f"missing {keyword}")
    if "PatientID" not in ds:
        raise DeidentificationError("missing PatientID")
