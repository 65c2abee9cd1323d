"""Runs the node: the SCP in this process, de-identification workers, one forwarder per
destination and (when web.enabled) the administrator's page as child processes, restarted if they
die. SIGTERM/SIGINT stop everything after the current job.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog

from node.config import load_settings
from node.factory import Node
from node.logging import configure_logging
from node.queue.sweep import purge_expired_quarantine, sweep_spool

log = structlog.get_logger(__name__)

FORWARD = "forward:"  # the role of a destination's forwarder: FORWARD + its name
WEB = "web"


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def child_main(config_path: str, role: str) -> None:
    """Entry point of a worker process (spawned, so it shares nothing with its parent)."""
    settings = load_settings(config_path)
    configure_logging(settings.logging.level, settings.logging.format, process=f"{role}-{os.getpid()}")
    stop = _stop_on_signals()
    _stop_when_orphaned(stop)
    node = Node(settings)
    if role == WEB:
        from node.web.server import serve_web

        serve_web(node, stop)
        return
    if role == "deid":
        _one_thread_each()
    loop = node.deid_worker() if role == "deid" else node.forwarder(role.removeprefix(FORWARD))
    loop.run(stop)


def _one_thread_each() -> None:
    """The node runs a worker process per core; OpenCV's and tesseract's own thread pools inside
    each would only contend with the other workers (and cost CPU to synchronise)."""
    import cv2

    cv2.setNumThreads(1)
    os.environ["OMP_THREAD_LIMIT"] = "1"


def _stop_when_orphaned(stop: threading.Event) -> None:
    """A worker whose supervisor was killed finishes its job and exits; the restarted node
    spawns fresh ones (the job it held is settled, or its lease runs out)."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("supervisor_gone", parent=parent)
                stop.set()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class Supervisor:
    """Keeps `count` deid workers, one forwarder per destination and, when asked, the web page alive."""

    def __init__(self, config_path: Path, deid_workers: int, destinations: list[str], *, web: bool = False) -> None:
        self.config_path = str(config_path)
        self.wanted = {"deid": deid_workers, **{FORWARD + name: 1 for name in destinations}, WEB: int(web)}
        self.context = multiprocessing.get_context("spawn")
        self.children: list[tuple[str, BaseProcess]] = []

    def _spawn(self, role: str) -> None:
        process = self.context.Process(target=child_main, args=(self.config_path, role), name=f"deid-node-{role}")
        process.start()
        self.children.append((role, process))
        log.info("child_started", role=role, pid=process.pid)

    def reconcile(self) -> None:
        alive = []
        for role, process in self.children:
            if process.is_alive():
                alive.append((role, process))
            else:
                log.warning("child_exited", role=role, pid=process.pid, exitcode=process.exitcode)
        self.children = alive
        for role, count in self.wanted.items():
            for _ in range(count - sum(1 for r, _ in self.children if r == role)):
                self._spawn(role)

    def stop(self, timeout: float = 30.0) -> None:
        for _, process in self.children:
            if process.is_alive():
                process.terminate()  # SIGTERM: finish the current job, then exit
        for _, process in self.children:
            process.join(timeout)
            if process.is_alive():
                process.kill()


class QuarantineRetention:
    """Deletes quarantined originals past `quarantine.retention_days`, every purge interval."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.settings.quarantine
        self.due = 0.0

    def purge_when_due(self) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + self.settings.purge_interval_seconds
        try:
            purge_expired_quarantine(self.node.spool, self.node.jobs, self.settings.retention_days)
        except Exception as exc:  # noqa: BLE001 - database away: purge at the next interval
            log.error("quarantine_purge_failed", error=type(exc).__name__)


def run(node: Node, *, with_scp: bool, deid_workers: int) -> None:
    """Run until SIGTERM/SIGINT."""
    node.upgrade_database()
    node.spool.clear_partials()
    released = node.jobs.release_dead_owners()
    if released:
        log.warning("released_stale_jobs", count=released)
    node.check_routes()  # fail fast here on a malformed profile, pixel policy or destination, not in every child
    stop = _stop_on_signals()
    server = None
    retention = None
    if with_scp:  # the node that receives owns its spool: only it sweeps and purges it
        from node.receive.scp import start_scp

        routes = node.settings.routes
        sweep_spool(node.spool, node.jobs, node.derivation, routes[0].name if len(routes) == 1 else None)
        retention = QuarantineRetention(node)
        server = start_scp(node.settings.receive, node.store_handler())
    supervisor = Supervisor(node.settings.source, deid_workers, node.settings.routed_destinations,
                            web=with_scp and node.settings.web.enabled)
    try:
        while not stop.is_set():
            supervisor.reconcile()
            node.jobs.release_dead_owners()
            if retention is not None:
                retention.purge_when_due()
            stop.wait(1.0)
    finally:
        log.info("shutting_down")
        if server is not None:
            server.shutdown()
        supervisor.stop()
