"""A C-STORE SCU that sends a batch of clean files over one association and says, per file,
whether the destination took it.

Files are sent from disk without being decoded (pynetdicom reads the encoded dataset), in the
transfer syntax they are stored in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.status import code_to_category

from node.config import Destination
from node.network import client_tls_context, no_delay

# C-STORE warnings that still mean "stored" (PS3.4 B.2.3): coercion, elements discarded, mismatch.
STORED_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class SendResult:
    stored: bool
    detail: str  # PHI-free: a status code or a short reason


class StoreSCU:
    def __init__(self, calling_ae_title: str, destination: Destination, timeout: float) -> None:
        # Send the clean file's bytes as they are on disk: no second parse, no re-encoding.
        _config.STORE_SEND_CHUNKED_DATASET = True
        self.calling_ae_title = calling_ae_title
        self.destination = destination
        self.timeout = timeout

    @property
    def name(self) -> str:
        return f"{self.destination.ae_title}@{self.destination.host}:{self.destination.port}"

    def send(self, files: Sequence[tuple[Path, str]]) -> list[SendResult]:
        """Send (path, sop_class_uid) pairs; one result per file, in order."""
        contexts: dict[tuple[str, str], None] = {}
        syntaxes = []
        for path, sop_class in files:
            syntax = str(read_file_meta_info(path).TransferSyntaxUID)
            syntaxes.append(syntax)
            contexts[(sop_class, syntax)] = None
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for sop_class, syntax in list(contexts)[:MAX_CONTEXTS]:
            ae.add_requested_context(sop_class, syntax)
        tls = self.destination.tls
        tls_args = (client_tls_context(tls), tls.server_hostname or self.destination.host) if tls else None
        assoc = ae.associate(self.destination.host, self.destination.port, ae_title=self.destination.ae_title,
                             tls_args=tls_args)
        if not assoc.is_established:
            reason = "association rejected" if assoc.is_rejected else "destination unreachable"
            return [SendResult(False, reason)] * len(files)
        no_delay(assoc)
        results = []
        try:
            for (path, _), syntax in zip(files, syntaxes, strict=True):
                results.append(self._send_one(assoc, path) if assoc.is_established
                               else SendResult(False, "association lost"))
        finally:
            if assoc.is_established:
                assoc.release()
        return results

    @staticmethod
    def _send_one(assoc, path: Path) -> SendResult:  # type: ignore[no-untyped-def]
        try:
            status = assoc.send_c_store(path)
        except ValueError as exc:  # no accepted presentation context for this SOP class/syntax
            return SendResult(False, f"not accepted by destination ({type(exc).__name__})")
        if not status or "Status" not in status:
            return SendResult(False, "no response (timeout or association aborted)")
        code = int(status.Status)
        if code == 0x0000 or code in STORED_WARNINGS:
            return SendResult(True, f"0x{code:04X}")
        return SendResult(False, f"status 0x{code:04X} ({code_to_category(code)})")
