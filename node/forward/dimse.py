"""DICOM C-STORE destinations: one association kept open across batches, and for each file an
outcome that tells a refusal for cause from an outage.

    DimseSender(name: str, destination: DimseDestination, *, calling_ae_title: str, timeout: float)

`name` is the destination's name in config (it appears in logs); `timeout` bounds association
negotiation, each DIMSE response and the network's silence.

The association is reused while it is established and has an accepted presentation context for
every (SOP class, transfer syntax) pair of the next batch; a batch that needs another pair
replaces it with one proposing the pairs seen so far. It is released after a while without
work (`release_if_idle`) and on `close`; one the peer aborted (a restart, its idle timeout) is
noticed before the next batch and replaced.

Files are sent from disk without being decoded, in the transfer syntax they are stored in:
the file meta is read here (to learn the pair to negotiate) and pynetdicom streams the encoded
dataset after it (STORE_SEND_CHUNKED_DATASET).

Outcomes (see node.forward.sender; statuses in node.forward.status):
- REFUSED when the destination refused the instance itself: its presentation context (SOP class
  in that transfer syntax) was not accepted, or the C-STORE status says so (0xA9xx, 0xCxxx,
  0x0122 ...), with the status and the destination's ErrorComment; also a clean file that cannot
  be read (no resend can succeed).
- WAIT for anything about the connection or the destination's state: nothing listens, a timeout,
  an abort, an association rejected -- transient (busy) or permanent. A permanent rejection
  names the association, not the instance (calling/called AE title not recognised is the DICOM
  form of a wrong password): the operator fixes it and everything waiting goes through, with
  nothing quarantined meanwhile. 0xA7xx out of resources is WAIT too.
- DELIVERED for 0x0000 and the warnings that still mean stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config, build_context
from pynetdicom.association import Association

from node.config import DimseDestination
from node.forward.sender import CleanFile, Outcome, SendResult
from node.forward.status import status_result, unreadable_file
from node.network import client_tls_context, no_delay

log = structlog.get_logger(__name__)

MAX_CONTEXTS = 128  # presentation context IDs are the odd numbers 1 to 255

Pair = tuple[str, str]  # (SOP class UID, transfer syntax UID)

LOST = SendResult(Outcome.WAIT, "association lost")
NO_RESPONSE = SendResult(Outcome.WAIT, "no response (timeout or association aborted)")
UNREACHABLE = SendResult(Outcome.WAIT, "destination unreachable")
# The destination accepted the association but none of the pairs proposed: each file is refused
# with its own pair (see not_accepted).
NONE_ACCEPTED = SendResult(Outcome.REFUSED, "no presentation context accepted")


def not_accepted(pair: Pair) -> SendResult:
    """The destination did not accept this SOP class in this transfer syntax (UIDs only: no PHI)."""
    return SendResult(Outcome.REFUSED, f"presentation context not accepted: {pair[0]} in {pair[1]}")


@dataclass(frozen=True)
class _File:
    """A clean file as its file meta describes it."""

    path: Path
    sop_class: str
    sop_instance: str
    syntax: str

    @property
    def pair(self) -> Pair:
        return (self.sop_class, self.syntax)


def _read_meta(clean: CleanFile) -> _File | SendResult:
    """The file meta, for the pair to negotiate. The file's own SOP class is what is negotiated
    and sent; the job's stands in only where it lacks one."""
    try:
        meta = read_file_meta_info(clean.path)
        return _File(clean.path, str(meta.get("MediaStorageSOPClassUID") or clean.sop_class_uid),
                     str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID))
    except Exception as exc:  # noqa: BLE001 - a missing or damaged file fails alone, not its batch
        return unreadable_file(exc)


def _association_failure(assoc: Association) -> SendResult:
    """Why no association was established: WAIT (see the module docstring), unless the destination
    accepted it with none of the proposed presentation contexts (pynetdicom then aborts it)."""
    answer = assoc.acceptor.primitive
    if answer is not None and answer.result == 0x00 and not assoc.accepted_contexts:
        return NONE_ACCEPTED
    if assoc.is_rejected:
        if answer is not None:
            return SendResult(Outcome.WAIT, f"association rejected ({answer.result_str.lower()}, "
                                            f"{answer.source_str.lower()}: {answer.reason_str.lower()})")
        return SendResult(Outcome.WAIT, "association rejected")
    return UNREACHABLE  # no connection, a timeout, or the peer aborted the negotiation


class _Open:
    """The association in use and what was negotiated on it."""

    def __init__(self, assoc: Association, proposed: Sequence[Pair]) -> None:
        self.assoc = assoc
        self.contexts: dict[Pair, int] = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id)
                                          for cx in assoc.accepted_contexts}
        self.rejected = frozenset(proposed) - self.contexts.keys()
        self.opened = time.monotonic()
        self.last_used = self.opened
        self.sent = 0
        self.lost = False  # set when a C-STORE found the connection closed

    @property
    def alive(self) -> bool:
        return not self.lost and bool(self.assoc.is_established) and not self.assoc.acse.is_aborted()

    def serves(self, pairs: Iterable[Pair]) -> bool:
        return self.alive and all(pair in self.contexts for pair in pairs)


class DimseSender:
    """Sends batches of clean files to one DICOM peer. Not thread-safe: one forwarder loop uses it."""

    def __init__(self, name: str, destination: DimseDestination, *, calling_ae_title: str, timeout: float) -> None:
        # Send the clean file's bytes as they are on disk: no parse of the dataset, no re-encoding.
        _config.STORE_SEND_CHUNKED_DATASET = True
        self._name = name
        self.calling_ae_title = calling_ae_title
        self.destination = destination
        self.timeout = timeout
        self._ae = AE(ae_title=calling_ae_title)
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = timeout
        self._open: _Open | None = None
        # Pairs sent so far, least recently needed first; a pair the destination rejected is left
        # out of later proposals until a batch needs it again.
        self._recent: dict[Pair, None] = {}

    @property
    def name(self) -> str:
        return self._name

    def send(self, files: Sequence[CleanFile]) -> list[SendResult]:
        """One result per file, in order. Never raises for a file or the destination: a failure
        is that file's result."""
        read = [_read_meta(clean) for clean in files]
        batch = [item for item in read if isinstance(item, _File)]
        needed = list(dict.fromkeys(item.pair for item in batch))
        for pair in needed:
            self._recent.pop(pair, None)
            self._recent[pair] = None
        while len(self._recent) > MAX_CONTEXTS:  # no proposal holds more
            del self._recent[next(iter(self._recent))]
        sent: dict[int, SendResult] = {}
        if batch:
            sent = self._send_batch(batch, needed)
        return [sent[id(item)] if isinstance(item, _File) else item for item in read]

    def release_if_idle(self, now: float, idle_seconds: float) -> bool:
        """Release the association when nothing was sent on it for `idle_seconds` (monotonic `now`);
        whether it was released. An association found dead is forgotten either way."""
        current = self._open
        if current is None:
            return False
        if not current.alive:
            self._forget("closed while idle")
            return False
        if now - current.last_used < idle_seconds:
            return False
        self._release("idle")
        return True

    def close(self) -> None:
        """Release the association, if one is open (the forwarder stops)."""
        if self._open is not None:
            self._release("stop")

    def _send_batch(self, batch: Sequence[_File], needed: Sequence[Pair]) -> dict[int, SendResult]:
        """Results by id() of each file. A reused association found dead at the first file (the peer
        closed it while it was idle, unnoticed until now) is replaced once; after that, a lost
        association fails the rest of the batch."""
        reused = self._open
        current = self._association_for(needed)
        results: dict[int, SendResult] = {}
        for item in batch:
            result = self._store_on(current, item)
            if result is LOST and current is reused and not results:
                self._forget("closed while idle")
                current = self._associate(needed)
                result = self._store_on(current, item)
            results[id(item)] = result
        if isinstance(current, _Open) and not current.alive:
            self._forget("lost during batch")
        return results

    def _association_for(self, needed: Sequence[Pair]) -> _Open | SendResult:
        """The open association if it serves every pair needed, else a new one (or why not)."""
        current = self._open
        if current is not None and current.serves(needed):
            return current
        if current is not None and current.alive:
            self._release("new contexts")
        elif current is not None:
            self._forget("closed while idle")
        return self._associate(needed)

    def _proposal(self, needed: Sequence[Pair]) -> list[Pair]:
        """This batch's pairs first, then those seen before, most recently needed first, leaving
        out those the destination rejected; at most MAX_CONTEXTS."""
        wanted = set(needed)
        earlier = [pair for pair in reversed(self._recent) if pair not in wanted]
        return [*needed, *earlier][:MAX_CONTEXTS]

    def _associate(self, needed: Sequence[Pair]) -> _Open | SendResult:
        proposed = self._proposal(needed)
        tls = self.destination.tls
        tls_args = (client_tls_context(tls), tls.server_hostname or self.destination.host) if tls else None
        assoc = self._ae.associate(self.destination.host, self.destination.port,
                                   contexts=[build_context(*pair) for pair in proposed],
                                   ae_title=self.destination.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            failure = _association_failure(assoc)
            if failure is NONE_ACCEPTED:  # every pair rejected: none proposed again unless needed
                for pair in proposed:
                    self._recent.pop(pair, None)
            log.warning("association_failed", destination=self.name, reason=failure.detail, contexts=len(proposed))
            return failure
        no_delay(assoc)
        current = self._open = _Open(assoc, proposed)
        for pair in current.rejected:  # remembered: not proposed again unless a batch needs it
            self._recent.pop(pair, None)
        log.info("association_opened", destination=self.name, contexts=len(proposed),
                 accepted=len(current.contexts), rejected=len(current.rejected))
        return current

    def _release(self, reason: str) -> None:
        current, self._open = self._open, None
        if current is None:
            return
        if current.alive:
            current.assoc.release()
        self._log_end("association_released", current, reason)

    def _forget(self, reason: str) -> None:
        """Drop an association that is gone (aborted by the peer, timed out, connection lost)."""
        current, self._open = self._open, None
        if current is not None:  # its own threads have ended it (or are about to)
            self._log_end("association_lost", current, reason)

    def _log_end(self, event: str, current: _Open, reason: str) -> None:
        log.info(event, destination=self.name, reason=reason, instances=current.sent,
                 seconds=round(time.monotonic() - current.opened, 3))

    def _store_on(self, current: _Open | SendResult, item: _File) -> SendResult:
        """The file's result on the association, or on the failure to open one."""
        if current is NONE_ACCEPTED:
            return not_accepted(item.pair)
        if isinstance(current, SendResult):
            return current
        return self._store(current, item)

    def _store(self, current: _Open, item: _File) -> SendResult:
        """One C-STORE of the file, streamed from disk by pynetdicom (STORE_SEND_CHUNKED_DATASET)."""
        if item.pair not in current.contexts:
            return not_accepted(item.pair)
        if not current.alive:
            return LOST
        started = time.monotonic()
        try:
            status = current.assoc.send_c_store(item.path)
        except (OSError, ValueError) as exc:  # the file went away or broke after its meta was read
            if current.assoc.is_established:
                current.assoc.abort()  # its command may be on the wire: the peer would wait for the rest
            return unreadable_file(exc)
        current.last_used = time.monotonic()
        if not status or "Status" not in status:
            if current.last_used - started < self.timeout:  # no DIMSE timeout: the peer closed it
                current.lost = True  # (a restart, its idle timeout): the batch may try a new one
                return LOST
            return NO_RESPONSE
        current.sent += 1
        return status_result(int(status.Status), status.get("ErrorComment", ""))
