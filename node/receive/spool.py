"""The spool directory: received, de-identified and quarantined instances, one file each.

A file is written under tmp/, fsynced, then renamed into place and the directory fsynced, so
after any crash a file in incoming/ or clean/ is whole; tmp/ holds only partial writes that
were never acknowledged and is emptied at start.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from node.processes import pid_alive


class SpoolFull(Exception):
    """Not enough free space to keep another instance safely."""


class Spool:
    AREAS = ("incoming", "clean", "quarantine", "tmp")

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        for area in self.AREAS:
            (root / area).mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, area: str, name: str) -> Path:
        return self.root / area / name

    def new_name(self) -> str:
        return f"{uuid.uuid4().hex}.dcm"

    def ensure_room(self, size: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free - size < self.min_free_bytes:
            raise SpoolFull(f"spool has {free} bytes free, needs {size} + reserve {self.min_free_bytes}")

    def write(self, area: str, name: str, *parts: bytes | memoryview) -> Path:
        """Write durably: tmp file, fsync, atomic rename, fsync of the directory. The file is the
        parts one after the other (a file head and a received body need not be joined in memory
        first: for a large instance that join was a copy of all of it)."""
        self.ensure_room(sum(len(part) for part in parts))
        final = self.path(area, name)
        partial = self.path("tmp", f"{name}.{os.getpid()}.part")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return final

    def move(self, src_area: str, dst_area: str, name: str) -> Path:
        target = self.path(dst_area, name)
        os.replace(self.path(src_area, name), target)
        _fsync_dir(target.parent)
        return target

    def quarantine(self, name: str) -> None:
        """Set the received original aside; drop any clean copy so it cannot be forwarded."""
        if self.path("incoming", name).exists():
            self.move("incoming", "quarantine", name)
        self.remove("clean", name)

    def remove(self, area: str, name: str) -> None:
        self.path(area, name).unlink(missing_ok=True)

    def clear_partials(self) -> int:
        """Remove writes whose writer died; none of them was ever acknowledged."""
        count = 0
        for leftover in (self.root / "tmp").iterdir():
            writer = leftover.name.rsplit(".", 2)[-2] if leftover.name.endswith(".part") else ""
            if writer.isdigit() and pid_alive(int(writer)):
                continue
            leftover.unlink(missing_ok=True)
            count += 1
        return count

    def count(self, area: str) -> int:
        return sum(1 for _ in (self.root / area).iterdir())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
