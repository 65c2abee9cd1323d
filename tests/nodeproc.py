"""Run the real node as a subprocess (`deid-node serve`) with a config written for the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET = "test-secret-not-for-production"


def write_config(directory: Path, *, port: int, dest_port: int = 0, dest_aet: str = "RESEARCH_PACS",
                 database_url: str | None = None, workers: int = 1, pixels: bool = True,
                 profile: str = "tcia.yaml", routes: list[dict[str, Any]] | None = None,
                 **overrides: Any) -> Path:
    """A node config under `directory`, pointing at the repository's profiles and policies: one
    destination (`dest_port`), or `routes` (profile and pixel_policy given as names of files in
    config/ and config/profiles/) and the `destinations` they name."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "node_name": overrides.pop("node_name", "test-node"),
        "spool_dir": str(directory / "spool"),
        "database_url": database_url or f"sqlite:///{directory / 'node.db'}",
        "secret_file": str(directory / "secret.key"),
        "receive": {
            "ae_title": "DEID_NODE", "bind": "127.0.0.1", "port": port,
            "allowed_callers": [{"ae_title": "MODALITY"}, {"ae_title": "STORESCU"}, {"ae_title": "ECHOSCU"}],
            "min_free_bytes": 0,
        },
        "workers": {"count": workers, "lease_seconds": 30, "poll_seconds": 0.05, "max_attempts": 2},
        "deid": {"profile": str(REPO / "config" / "profiles" / profile)},
        "pixels": {"policy": str(REPO / "config" / "pixel-policy.yaml") if pixels else None},
        "forward": {
            "calling_ae_title": "DEID_NODE",
            "destination": {"ae_title": dest_aet, "host": "127.0.0.1", "port": dest_port},
            "max_attempts": 4, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 2, "batch_size": 16,
            "timeout_seconds": 10,
        },
        "logging": {"level": "INFO", "format": "json"},
    }
    if routes is not None:
        for key, section in (("allowed_callers", "receive"), ("profile", "deid"), ("policy", "pixels"),
                             ("destination", "forward")):
            del config[section][key]
        config["routes"] = [{**route, "profile": str(REPO / "config" / "profiles" / route["profile"]),
                             **({"pixel_policy": str(REPO / "config" / route["pixel_policy"])}
                                if route.get("pixel_policy") else {})} for route in routes]
    for key, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = directory / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DEID_SECRET"] = SECRET
    env["OMP_THREAD_LIMIT"] = "1"
    env.pop("DEID_CONFIG", None)
    return env


def deid_node(config: Path, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run one CLI command of the real node."""
    return subprocess.run([sys.executable, "-m", "node", "--config", str(config), *args], capture_output=True,
                          text=True, env=node_env(), check=check, timeout=120, **kwargs)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NodeProcess:
    """`deid-node serve` as a child process; its log (stderr) goes to a file the test can read."""

    def __init__(self, config: Path, port: int, *extra: str, program: Sequence[str] = ("-m", "node")) -> None:
        self.config = config
        self.port = port
        self.extra = extra
        self.program = tuple(program)  # what the interpreter runs: the node, or a benchmark's variant of it
        self.log_path = config.parent / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> "NodeProcess":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *self.program, "--config", str(self.config), "serve", *self.extra],
            stdout=log, stderr=log, env=node_env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node did not listen on {self.port}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9 of the whole process group: SCP, workers and forwarder."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def job_counts(config: Path) -> dict[str, int]:
    """Jobs per state, read from `deid-node status` as an administrator would."""
    counts = {}
    for line in deid_node(config, "status").stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def wait_until(predicate, timeout: float = 300.0, interval: float = 0.3) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
