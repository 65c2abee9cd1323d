"""Socket settings shared by the SCP and the SCU."""

from __future__ import annotations

import socket

from pynetdicom.association import Association
from pynetdicom.events import Event


def no_delay(assoc: Association) -> None:
    """Disable Nagle's algorithm: otherwise each small C-STORE response waits for a delayed
    ACK, about 40 ms per instance on loopback (measured with bench/sink.py)."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def no_delay_on_open(event: Event) -> None:
    """EVT_CONN_OPEN handler for servers."""
    no_delay(event.assoc)
