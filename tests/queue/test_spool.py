"""The spool writes whole files or nothing, refuses when the disk could not hold an instance's
whole life, and keeps originals sealed: unreadable without the node secret, any alteration or
truncation detected."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from node.queue.sealing import CHUNK_BYTES, MAGIC, SealBroken, Sealer
from node.queue.spool import Spool, SpoolFull

SECRET = b"test-secret-not-for-production"


def _spool(root: Path, **kwargs) -> Spool:  # type: ignore[no-untyped-def]
    return Spool(root, Sealer(SECRET), **kwargs)


def test_write_is_atomic_and_leaves_no_partials(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    name = spool.new_name()
    spool.write("clean", name, b"DICM" * 1000)
    assert spool.path("clean", name).read_bytes() == b"DICM" * 1000
    assert spool.count("tmp") == 0


def test_originals_are_sealed_from_parts_of_any_buffer_and_open_whole(tmp_path: Path) -> None:
    """A file head and a received body (a memoryview of pynetdicom's buffer) are sealed as they
    are written, across several chunks, without being joined in memory first."""
    spool = _spool(tmp_path)
    body = bytearray(os.urandom(CHUNK_BYTES // 2) * 5)  # 2.5 chunks
    name = spool.new_name()
    with memoryview(body) as view:
        spool.accept(name, b"HEAD", view, b"", b"TAIL")
    on_disk = spool.path("incoming", name).read_bytes()
    assert on_disk.startswith(MAGIC) and bytes(body[:4096]) not in on_disk
    with spool.open_original(name) as original:
        assert original.read() == b"HEAD" + bytes(body) + b"TAIL"
        original.seek(2)
        assert original.read(4) == b"AD" + bytes(body[:2])
    empty = spool.new_name()
    spool.accept(empty)
    assert spool.open_original(empty).read() == b""


def test_a_sealed_original_does_not_open_with_another_secret_or_altered(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    name = spool.new_name()
    spool.accept(name, os.urandom(CHUNK_BYTES * 2))  # two full chunks, then the final empty one
    path = spool.path("incoming", name)
    sealed = path.read_bytes()
    with pytest.raises(SealBroken):
        Sealer(b"another-secret").open(path)
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 1
    last_chunk = 4 + CHUNK_BYTES + 16  # a cut at a chunk boundary: every chunk left is whole
    for altered in (bytes(flipped), sealed[:-1], sealed[:-(4 + 16)], sealed[:len(sealed) - 4 - 16 - last_chunk]):
        path.write_bytes(altered)
        with pytest.raises(SealBroken):
            spool.open_original(name)


def test_refuses_unless_the_instance_has_room_for_its_whole_life(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)  # a disk that others write to: its free space held still
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage)
    spool = _spool(tmp_path, min_free_bytes=usage.free - 2_000_000)  # leaves 2 MB above the reserve
    spool.accept(spool.new_name(), b"x" * 500_000)  # 3 x 0.5 MB fits
    with pytest.raises(SpoolFull):
        spool.accept(spool.new_name(), b"x" * 700_000)  # its original fits, its life does not
    assert spool.count("incoming") == 1 and spool.count("tmp") == 0


def test_partials_of_dead_writers_are_cleared_but_live_ones_kept(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (tmp_path / "tmp" / "a.dcm.999999999.part").write_bytes(b"half")
    (tmp_path / "tmp" / f"b.dcm.{os.getpid()}.part").write_bytes(b"in progress")
    assert spool.clear_partials() == 1
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"b.dcm.{os.getpid()}.part"]
