"""A folder as a source: every DICOM file under a directory enters the node by the same durable
path as a received instance (StoreHandler.admit: spool copy with fsync, then the job row), on a
route named up front, and goes on through the workers to that route's destinations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from node.receive.handlers import StoreHandler

INGEST_CALLER = "-INGEST-"  # the calling AE title an ingested job records (no AE sent it)


class Ingested(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # this instance is already queued on this route
    NOT_DICOM = "not DICOM"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too large"


@dataclass(frozen=True)
class IngestResult:
    outcome: Ingested
    job_id: int | None = None


def ingest_file(handler: StoreHandler, path: Path, route: str) -> IngestResult:
    """Queue one file on `route`; a file that is not a DICOM Part-10 instance is skipped, never fatal."""
    try:
        data = path.read_bytes()
    except OSError:
        return IngestResult(Ingested.UNREADABLE)
    if len(data) > handler.max_instance_bytes:
        return IngestResult(Ingested.TOO_LARGE)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError):
        return IngestResult(Ingested.NOT_DICOM)
    meta = header.file_meta
    sop_class = str(header.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    sop_instance = str(header.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "")
    if not sop_class or not sop_instance:
        return IngestResult(Ingested.NOT_DICOM)
    if handler.jobs.queued_on_route(handler.derivation.lookup_hash("uid", sop_instance), route):
        return IngestResult(Ingested.DUPLICATE)
    job_id = handler.admit((data,), sop_class=sop_class, sop_instance=sop_instance, calling_ae=INGEST_CALLER,
                           called_ae=None, source_host=None, route=route)
    return IngestResult(Ingested.QUEUED, job_id)
