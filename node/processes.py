"""Process bookkeeping shared by the spool, the queue and the supervisor."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (its lease or temp file is still owned)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def poll(run_once: Callable[[], bool], stop: threading.Event, idle_seconds: float) -> None:
    """Call `run_once` until `stop` is set, resting `idle_seconds` whenever it found no work."""
    while not stop.is_set():
        if not run_once():
            stop.wait(idle_seconds)
