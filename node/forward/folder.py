"""A folder as a destination: each clean instance a Part-10 file at
`<path>/<project>/<patient>/<study>/<series>/<sop>.dcm`, written atomically (temp file, fsync,
rename, fsync of the directory), so a reader of the folder never sees half a file and a crash
never leaves one there.

What goes wrong writing to a disk (full, read-only, permissions, a network mount away) is the
folder's problem, not the instance's: WAIT, never REFUSED.

Partial files are written under `<path>/.partial/` (the same file system, so the rename is atomic),
never next to the finished ones; those a killed writer left behind are removed when a sender
starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pydicom

from node.forward.sender import CleanFile, Outcome, SendResult
from node.processes import pid_alive
from node.queue.spool import _fsync_dir  # the spool's durable-rename step, the same here

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _component(value: str) -> str:
    """One path component from a pseudonym or UID: no separator, no `..`, never empty."""
    cleaned = _UNSAFE.sub("_", value.strip()).lstrip(".")
    return cleaned or "unknown"


PARTIAL = ".partial"


class FolderSender:
    def __init__(self, name: str, root: Path) -> None:
        self._name = name
        self.root = root
        self._clear_dead_partials()

    def _clear_dead_partials(self) -> None:
        """Remove partial files whose writer (the pid in the name) is gone: never renamed into
        place, never reported delivered."""
        with contextlib.suppress(OSError):  # no folder yet, or not readable now: the writes will say so
            for leftover in (self.root / PARTIAL).iterdir():
                writer = leftover.name.rsplit(".", 2)[-2] if leftover.name.endswith(".part") else ""
                if not (writer.isdigit() and pid_alive(int(writer))):
                    leftover.unlink(missing_ok=True)

    @property
    def name(self) -> str:
        return self._name

    def send(self, files: Sequence[CleanFile]) -> list[SendResult]:
        return [self._write(item) for item in files]

    def release_if_idle(self, now: float, idle_seconds: float) -> bool:
        return False  # nothing held open

    def close(self) -> None:
        pass

    def target(self, item: CleanFile) -> Path:
        """Where the instance goes; study and series come from the clean file itself when the
        caller does not know them."""
        study, series, sop = item.study_uid, item.series_uid, item.sop_instance_uid
        if not (study and series and sop):
            header = pydicom.dcmread(item.path, stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
            study = study or str(header.get("StudyInstanceUID", ""))
            series = series or str(header.get("SeriesInstanceUID", ""))
            sop = sop or str(header.get("SOPInstanceUID", ""))
        return self.root.joinpath(*map(_component, (item.project, item.patient, study, series)), f"{_component(sop)}.dcm")

    def _write(self, item: CleanFile) -> SendResult:
        try:
            target = self.target(item)
        except OSError as exc:
            return SendResult(Outcome.WAIT, f"cannot read the clean file ({exc.strerror or type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - a clean file pydicom cannot read: no retry helps
            return SendResult(Outcome.REFUSED, f"clean file unreadable ({type(exc).__name__})")
        partial = self.root / PARTIAL / f"{target.name}.{os.getpid()}.part"
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(item.path, "rb") as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):  # the folder itself may be what is missing
                partial.unlink(missing_ok=True)
            return SendResult(Outcome.WAIT, f"cannot write to the folder ({exc.strerror or type(exc).__name__})")
        return SendResult(Outcome.DELIVERED, "written")

