"""The spool directory: received, de-identified and quarantined instances, one file each.

A file is written under tmp/, fsynced, then renamed into place and the directory fsynced, so
after any crash a file in incoming/ or clean/ is whole; tmp/ holds only partial writes that
were never acknowledged and is emptied at start. Originals (incoming/, and quarantine/ where
they are moved) are sealed with a key derived from the node secret (node/queue/sealing.py); the
de-identified copies in clean/ are plain.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from node.processes import pid_alive
from node.queue.sealing import Sealer


class SpoolFull(Exception):
    """Not enough free space to keep another instance safely."""


class Spool:
    AREAS = ("incoming", "clean", "quarantine", "tmp")
    # Disk an accepted instance may need over its life, in multiples of its size: the original,
    # its clean copy (written beside it before the original goes) and that copy's growth when a
    # pixel edit decompresses it. Reserved when it is received: afterwards it is never refused.
    LIFETIME_FACTOR = 3

    def __init__(self, root: Path, sealer: Sealer, min_free_bytes: int = 0) -> None:
        self.root = root
        self.sealer = sealer
        self.min_free_bytes = min_free_bytes
        for area in self.AREAS:
            (root / area).mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, area: str, name: str) -> Path:
        return self.root / area / name

    def new_name(self) -> str:
        return f"{uuid.uuid4().hex}.dcm"

    def ensure_room(self, size: int) -> None:
        """Refuse an instance of `size` bytes unless its whole life fits above the reserve."""
        free = shutil.disk_usage(self.root).free
        needed = self.LIFETIME_FACTOR * size
        if free - needed < self.min_free_bytes:
            raise SpoolFull(f"spool has {free} bytes free, needs {needed} + reserve {self.min_free_bytes}")

    def accept(self, name: str, *parts: bytes | memoryview) -> Path:
        """Keep a received original: room reserved for its whole life, sealed as it is written
        (from the parts one after the other: a file head and a received body are never joined in
        memory, for a large instance that join was a copy of all of it)."""
        self.ensure_room(sum(len(part) for part in parts))
        return self._write_durably("incoming", name, lambda fd: self.sealer.seal(fd, parts))

    def open_original(self, name: str, area: str = "incoming") -> BinaryIO:
        """A received (or quarantined) original, decrypted into memory (SealBroken if it cannot be)."""
        return self.sealer.open(self.path(area, name))

    def reseal(self, area: str, name: str) -> Path:
        """Seal an original written in plain (by a node from before sealing), in place."""
        plain = self.path(area, name).read_bytes()
        return self._write_durably(area, name, lambda fd: self.sealer.seal(fd, [plain]))

    def write(self, area: str, name: str, *parts: bytes | memoryview) -> Path:
        """Write a de-identified file durably. Its room was reserved when its original was
        accepted; a disk that is full all the same raises OSError (ENOSPC), for the caller to
        wait on."""

        def plain(fd: int) -> None:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]

        return self._write_durably(area, name, plain)

    def _write_durably(self, area: str, name: str, fill: Callable[[int], object]) -> Path:
        """tmp file, fsync, atomic rename, fsync of the directory."""
        final = self.path(area, name)
        partial = self.path("tmp", f"{name}.{os.getpid()}.part")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                fill(fd)
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

    def names(self, area: str) -> list[str]:
        return sorted(entry.name for entry in (self.root / area).iterdir())

    def count(self, area: str) -> int:
        return sum(1 for _ in (self.root / area).iterdir())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
