"""One handler per DIMSE event. C-STORE answers success only after the instance is durable.

Statuses come from PS3.4 Annex B (pynetdicom.status.STORAGE_SERVICE_CLASS_STATUS), each with
an ErrorComment that tells the sender's administrator what went wrong, without PHI.
"""

from __future__ import annotations

import time

import structlog
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from node.deid.pseudonyms import KeyedDerivation
from node.queue.store import JobStore
from node.queue.spool import Spool, SpoolFull

log = structlog.get_logger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot Understand
_PREAMBLE_AND_PREFIX = bytes(128) + b"DICM"
assert code_to_category(OUT_OF_RESOURCES) == "Failure" and OUT_OF_RESOURCES in STORAGE_SERVICE_CLASS_STATUS


def status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]  # LO
    return ds


class StoreHandler:
    """EVT_C_STORE: spool (fsync + rename), record the job, and only then say success."""

    def __init__(self, spool: Spool, jobs: JobStore, derivation: KeyedDerivation, max_instance_bytes: int) -> None:
        self.spool = spool
        self.jobs = jobs
        self.derivation = derivation
        self.max_instance_bytes = max_instance_bytes

    def __call__(self, event: Event) -> Dataset:
        started = time.perf_counter()
        request = event.request
        size = request.DataSet.getbuffer().nbytes
        if size > self.max_instance_bytes:
            log.warning("store_refused", reason="too large", bytes=size)
            return status(OUT_OF_RESOURCES, "instance larger than this node accepts")
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        if not sop_class or not sop_instance:
            return status(CANNOT_UNDERSTAND, "request lacks Affected SOP Class/Instance UID")
        try:
            head = _PREAMBLE_AND_PREFIX + encode_file_meta(event.file_meta)
        except Exception as exc:  # noqa: BLE001 - malformed context
            log.warning("store_refused", reason="cannot encode file", error=type(exc).__name__)
            return status(CANNOT_UNDERSTAND, "cannot read the received dataset")
        requestor = event.assoc.requestor
        called_ae = str(requestor.primitive.called_ae_title or "").strip() or None  # for routes that match on it
        try:
            # The file is the head, then the dataset as received: written from pynetdicom's buffer
            # (Event.encoded_dataset would copy it twice, two more instances' worth of memory).
            with request.DataSet.getbuffer() as body:
                job_id = self.admit((head, body), sop_class=sop_class, sop_instance=sop_instance,
                                    calling_ae=requestor.ae_title, called_ae=called_ae,
                                    source_host=requestor.address)
        except SpoolFull:
            log.error("store_refused", reason="spool full", bytes=size)
            return status(OUT_OF_RESOURCES, "node spool is full")
        except OSError as exc:
            log.error("store_refused", reason="spool write failed", error=type(exc).__name__)
            return status(OUT_OF_RESOURCES, "node cannot write its spool")
        except Exception as exc:  # noqa: BLE001 - database down or locked: refuse, keep nothing half-done
            log.error("store_refused", reason="database unavailable", error=type(exc).__name__)
            return status(OUT_OF_RESOURCES, "node database unavailable")
        file_bytes = len(head) + size
        log.info("received", job=job_id, bytes=file_bytes,
                 seconds=round(time.perf_counter() - started, 4))
        return status(SUCCESS)

    def admit(self, parts: tuple[bytes | memoryview, ...], *, sop_class: str, sop_instance: str, calling_ae: str,
              called_ae: str | None, source_host: str | None, route: str | None = None) -> int:
        """Make one instance durable and queue it: the spool copy (fsync, rename) first, then the
        job row; if the row cannot be written the copy goes, so nothing is left half-done. The
        one way in for an instance, received (C-STORE) or ingested from a folder."""
        name = self.spool.new_name()
        self.spool.accept(name, *parts)
        try:
            return self.jobs.enqueue(spool_file=name, calling_ae=calling_ae, called_ae=called_ae,
                                     source_host=source_host, route=route, sop_class_uid=sop_class,
                                     sop_instance_hash=self.derivation.lookup_hash("uid", sop_instance),
                                     size_bytes=sum(len(part) for part in parts))
        except BaseException:
            self.spool.remove("incoming", name)
            raise


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: the association was accepted, so the caller is allowed; answer success."""
    log.info("echo", caller=event.assoc.requestor.ae_title)
    return SUCCESS


def handlers(store: StoreHandler) -> list[tuple]:
    return [(evt.EVT_C_STORE, store), (evt.EVT_C_ECHO, handle_echo)]
