"""Who gets an association slot, and for how long a connection may wait to ask for one.

pynetdicom counts every open TCP connection against `maximum_associations` from the moment it is
accepted, and waits for the A-ASSOCIATE-RQ for its ACSE timeout (30 s by default) - longer still
for a peer that trickles the request a byte at a time, since each byte restarts the socket's
timeout. Eleven connect-then-close calls, or a dozen tricklers, kept every caller out. Here:

* a connection that has not delivered its whole A-ASSOCIATE-RQ within `associate_timeout`
  is closed (a watchdog shuts its socket down, which ends the blocked read);
* such connections never count against `max_associations`: only associations that were requested
  and admitted do, overall and per source address (`max_associations_per_host`);
* connections still waiting to associate are capped (`max_pending_connections`) so that a flood
  of them costs a bounded number of threads;
* every refusal, closed connection and aborted association is logged with the calling and called
  AE titles, the peer address and the reason - never anything from a dataset.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from node.config import ReceiveSettings

log = structlog.get_logger(__name__)

# A-ASSOCIATE-RJ (result, source, reason) - PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)  # rejected-permanent, service user
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)  # rejected-permanent, service user
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, service provider (presentation)

_WATCH_INTERVAL = 0.2


@dataclass
class _Pending:
    peer: str
    deadline: float


class AssociationGuard:
    """Admission and timeouts for one SCP's connections; see the module docstring."""

    def __init__(self, settings: ReceiveSettings) -> None:
        self.called_ae_title = settings.ae_title
        self.allowed = {caller.ae_title: set(caller.hosts) for caller in settings.allowed_callers}
        self.max_associations = settings.max_associations
        self.max_per_host = settings.max_associations_per_host
        self.max_pending = settings.max_pending_connections
        self.associate_timeout = settings.associate_timeout
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, _Pending] = {}
        self._admitted: dict[Association, str] = {}
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="association-guard", daemon=True)

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_REQUESTED, self.on_requested), (evt.EVT_REJECTED, self.on_rejected_by_library),
                (evt.EVT_ABORTED, self.on_aborted)]

    def start(self) -> None:
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()

    # -- connections that have not associated yet ------------------------------------------------

    def connection_opened(self, sock: socket.socket, peer: str) -> bool:
        """A new TCP connection: start its clock, or refuse it when too many are waiting."""
        with self._lock:
            self._forget_closed()
            if len(self._pending) >= self.max_pending:
                waiting = len(self._pending)
            else:
                self._pending[sock] = _Pending(peer, time.monotonic() + self.associate_timeout)
                return True
        log.warning("connection_refused", peer=peer, reason="too many connections waiting to associate",
                    waiting=waiting)
        return False

    def connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._pending.pop(sock, None)

    def _forget_closed(self) -> None:
        for sock in [s for s in self._pending if s.fileno() == -1]:
            del self._pending[sock]

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_INTERVAL):
            now = time.monotonic()
            with self._lock:
                self._forget_closed()
                late = [(sock, pending) for sock, pending in self._pending.items() if pending.deadline <= now]
                for sock, _ in late:
                    del self._pending[sock]
            for sock, pending in late:
                log.warning("connection_closed", peer=pending.peer,
                            reason=f"no association request within {self.associate_timeout:g} s")
                _shut(sock)

    # -- associations --------------------------------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: the whole A-ASSOCIATE-RQ is in. Admit it, or reject it with the reason."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()  # requestor.ae_title is set only later
        called = str(request.called_ae_title).strip()
        peer = assoc.requestor.address
        if assoc.dul.socket is not None and assoc.dul.socket.socket is not None:
            self.connection_closed(assoc.dul.socket.socket)  # it asked in time: its clock stops
        reason, rejection = self._admit(assoc, calling, called, peer)
        if rejection is None:
            return
        self._log_association("association_refused", assoc, reason=reason)
        assoc.acse.send_reject(*rejection)
        assoc.is_rejected = True
        assoc.kill()

    def _admit(self, assoc: Association, calling: str, called: str,
               peer: str) -> tuple[str, tuple[int, int, int] | None]:
        if called != self.called_ae_title:
            return "called AE title not recognised", CALLED_AE_NOT_RECOGNISED
        hosts = self.allowed.get(calling)
        if hosts is None:
            return "calling AE title not allowed", CALLING_AE_NOT_RECOGNISED
        if hosts and peer not in hosts:
            return "source address not allowed for this AE title", CALLING_AE_NOT_RECOGNISED
        with self._lock:
            for admitted in [a for a in self._admitted if not a.is_alive()]:
                del self._admitted[admitted]
            if len(self._admitted) >= self.max_associations:
                return f"association limit reached ({self.max_associations})", LOCAL_LIMIT_EXCEEDED
            if sum(1 for host in self._admitted.values() if host == peer) >= self.max_per_host:
                return f"association limit per host reached ({self.max_per_host})", LOCAL_LIMIT_EXCEEDED
            self._admitted[assoc] = peer
        return "", None

    def on_rejected_by_library(self, event: Event) -> None:
        """EVT_REJECTED: pynetdicom refused what the guard admitted (its own limit on connection
        threads, a user identity it could not check); the guard's own refusals are logged above."""
        self._log_association("association_refused", event.assoc, reason="refused by the DICOM library")

    def on_aborted(self, event: Event) -> None:
        """EVT_ABORTED: either side aborted an association (network timeout, peer abort)."""
        self._log_association("association_aborted", event.assoc)

    @staticmethod
    def _log_association(what: str, assoc: Association, **details: str) -> None:
        request = assoc.requestor.primitive
        log.warning(what, caller=str(getattr(request, "calling_ae_title", "")).strip(),
                    called=str(getattr(request, "called_ae_title", "")).strip(), peer=assoc.requestor.address,
                    **details)


def _shut(sock: socket.socket) -> None:
    """End the connection under a blocked reader: its recv() returns at once with nothing."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
    except OSError:
        pass  # already closed


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with each connection reported to an AssociationGuard."""

    guard: AssociationGuard

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept without the TLS handshake: pynetdicom's does it here, in the one thread that
        accepts connections, so a peer that connects and sends nothing held every TLS caller out.
        The handshake happens at the connection's first read, in its own thread, on its clock."""
        client, address = self.socket.accept()  # type: ignore[union-attr]
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.guard.connection_opened(request, str(client_address[0]))

    def shutdown_request(self, request: Any) -> None:
        self.guard.connection_closed(request)
        super().shutdown_request(request)

    def shutdown(self) -> None:
        self.guard.stop()
        super().shutdown()


def start_guarded_server(ae: AE, address: tuple[str, int], guard: AssociationGuard,
                         **kwargs: Any) -> GuardedAssociationServer:
    """What `AE.start_server(block=False)` does, with the guarded server class."""
    server = ae.make_server(address, server_class=GuardedAssociationServer, **kwargs)
    server.guard = guard
    guard.start()
    threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True).start()
    ae._servers.append(server)  # noqa: SLF001 - server.shutdown() removes it from there
    return server
