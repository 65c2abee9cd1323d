"""Connections that never associate cannot shut the node, and every refusal is logged (issue 17,
items 1 and 6): idle and trickling sockets are closed after the associate timeout and hold no
association slot; the called AE title is checked; limits per source address hold."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import structlog
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.config import load_settings
from node.factory import Node
from node.receive.scp import start_scp

TIMEOUT = 1.0  # the associate timeout these tests configure


@pytest.fixture
def scp_port(node_config) -> Iterator[int]:  # type: ignore[no-untyped-def]
    node = Node(load_settings(node_config(receive={"associate_timeout": TIMEOUT, "max_associations": 10,
                                                   "max_associations_per_host": 1,
                                                   "allowed_callers": [{"ae_title": "MODALITY"}]})))
    node.upgrade_database()
    server = start_scp(node.settings.receive, node.store_handler())
    yield node.settings.receive.port
    server.shutdown()


def _associate(port: int, calling: str = "MODALITY", called: str = "DEID_NODE", bind: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(bind, 0))


def _echo_seconds(port: int, bind: str = "127.0.0.1") -> float:
    """Seconds an allowed caller needs for a C-ECHO; fails if it is refused."""
    started = time.monotonic()
    assoc = _associate(port, bind=bind)
    assert assoc.is_established, "an allowed caller was refused"
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    return time.monotonic() - started


def _associate_rq_start() -> bytes:
    """The first bytes of an A-ASSOCIATE-RQ PDU: type 0x01, then a length the reader waits for."""
    return b"\x01\x00" + (200).to_bytes(4, "big") + b"\x00\x01\x00\x00" + b"DEID_NODE".ljust(16)


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, ConnectionError):
        return False


def test_idle_connections_hold_no_slot_and_are_closed_after_the_timeout(scp_port: int) -> None:
    idle = [socket.create_connection(("127.0.0.1", scp_port)) for _ in range(11)]  # > max_associations
    try:
        time.sleep(0.2)
        assert _echo_seconds(scp_port) < TIMEOUT  # today: "Local Limit Exceeded" for 30 s
        assert all(_closed_by_peer(sock, TIMEOUT + 2) for sock in idle)
    finally:
        for sock in idle:
            sock.close()


def test_connect_then_close_does_not_lock_callers_out(scp_port: int) -> None:
    for _ in range(11):
        socket.create_connection(("127.0.0.1", scp_port)).close()
    assert _echo_seconds(scp_port) < TIMEOUT


def test_peers_trickling_an_association_request_are_closed_and_block_nobody(scp_port: int) -> None:
    request = _associate_rq_start()
    stop = threading.Event()
    closed: list[bool] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", scp_port)) as sock:
            started = time.monotonic()
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    if stop.wait(0.3):
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            closed.append(_closed_by_peer(sock, 0.1) or time.monotonic() - started < TIMEOUT + 2)

    tricklers = [threading.Thread(target=trickle) for _ in range(12)]
    for thread in tricklers:
        thread.start()
    time.sleep(0.3)
    try:
        assert _echo_seconds(scp_port) < TIMEOUT  # while all twelve trickle
    finally:
        for thread in tricklers:
            thread.join(TIMEOUT + 3)
        stop.set()
    assert closed == [True] * 12  # the node closed them all, within the timeout (+ slack)


def test_called_ae_title_must_be_ours_and_refusals_are_logged(scp_port: int) -> None:
    with structlog.testing.capture_logs() as logs:
        wrong_called = _associate(scp_port, called="SOMEONE_ELSE")
        stranger = _associate(scp_port, calling="STRANGER")
    assert wrong_called.is_rejected and stranger.is_rejected
    refused = [entry for entry in logs if entry["event"] == "association_refused"]
    assert [(e["caller"], e["called"], e["peer"], e["reason"]) for e in refused] == [
        ("MODALITY", "SOMEONE_ELSE", "127.0.0.1", "called AE title not recognised"),
        ("STRANGER", "DEID_NODE", "127.0.0.1", "calling AE title not allowed"),
    ]


def test_associations_per_source_address_are_limited(scp_port: int) -> None:
    first = _associate(scp_port)
    try:
        assert first.is_established
        with structlog.testing.capture_logs() as logs:
            second = _associate(scp_port)
        assert second.is_rejected
        assert [e["reason"] for e in logs if e["event"] == "association_refused"] == [
            "association limit per host reached (1)"]
        assert _echo_seconds(scp_port, bind="127.0.0.2") < TIMEOUT  # another address still gets in
    finally:
        first.release()
