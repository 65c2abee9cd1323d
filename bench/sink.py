"""The benchmark's wire ceiling: a C-STORE SCP that only writes what arrives to disk.

It never decodes a dataset and does no de-identification, so the rate a sender reaches against it
is the most the network, pynetdicom and the disk allow; the node's own rate is read against it.

    python bench/sink.py --port 11113 --out /tmp/sink [--ae-title SINK]

runs until SIGINT/SIGTERM, printing one JSON line when it listens and one with its counts at exit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.status import Status

from node.config import ReceiveSettings
from node.network import no_delay_on_open
from node.receive.scp import accepted_contexts, build_ae


class Sink:
    """Accepts every storage SOP class in every transfer syntax and writes each instance as sent."""

    def __init__(self, port: int, out_dir: Path, ae_title: str = "SINK", host: str = "127.0.0.1") -> None:
        self.port = port
        self.out_dir = Path(out_dir)
        self.ae_title = ae_title
        self.host = host
        self.count = 0
        self.bytes_received = 0
        self.associations = 0  # accepted so far: how often a sender paid for negotiation
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        # The node's own acceptor (largest PDU, every storage class it accepts, contexts cheap to
        # copy per association), so that the ceiling is pynetdicom at its best, not at its
        # defaults, and the sink takes whatever the node forwards. Any caller may associate.
        self._ae = build_ae(ReceiveSettings(ae_title=ae_title))

    def _store(self, event: Event) -> int:
        # The raw dataset behind a fresh file meta: nothing is parsed, nothing is re-encoded.
        encoded = event.encoded_dataset(include_meta=True)
        (self.out_dir / f"{next(self._numbers):08d}.dcm").write_bytes(encoded)
        with self._lock:  # counted once on disk, so a reader never waits for a counted file
            self.count += 1
            self.bytes_received += len(encoded)
        return Status.SUCCESS

    def _accepted(self, event: Event) -> None:
        with self._lock:
            self.associations += 1

    def start(self) -> Self:
        """Listen in background threads; returns at once."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        handlers = [(evt.EVT_CONN_OPEN, no_delay_on_open), (evt.EVT_ACCEPTED, self._accepted),
                    (evt.EVT_C_STORE, self._store)]
        self._ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                              contexts=accepted_contexts(self._ae))
        return self

    @property
    def open_associations(self) -> int:
        """Associations established with the sink right now."""
        return len(self._ae.active_associations)

    def stop(self) -> None:
        self._ae.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the received instances")
    parser.add_argument("--ae-title", default="SINK")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Sink(args.port, args.out, args.ae_title, args.host) as sink:
        print(json.dumps({"event": "listening", "port": args.port, "ae_title": args.ae_title}), flush=True)
        stopping.wait()
    print(json.dumps({"event": "stopped", "received": sink.count, "bytes": sink.bytes_received,
                      "associations": sink.associations}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
