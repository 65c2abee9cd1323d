"""The spool writes whole files or nothing, and refuses when the disk is nearly full."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.receive.spool import Spool, SpoolFull


def test_write_is_atomic_and_leaves_no_partials(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    name = spool.new_name()
    spool.write("incoming", name, b"DICM" * 1000)
    assert spool.path("incoming", name).read_bytes() == b"DICM" * 1000
    assert spool.count("tmp") == 0


def test_parts_are_written_one_after_the_other_from_any_buffer(tmp_path: Path) -> None:
    """A file head and a received body (a memoryview of pynetdicom's buffer) go to disk without
    being joined in memory first."""
    spool = Spool(tmp_path)
    body = bytearray(b"\x01\x02" * 70_000)
    name = spool.new_name()
    with memoryview(body) as view:
        spool.write("incoming", name, b"HEAD", view, b"", b"TAIL")
    assert spool.path("incoming", name).read_bytes() == b"HEAD" + bytes(body) + b"TAIL"


def test_refuses_when_free_space_would_fall_below_the_reserve(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=10**18)  # more than any disk has
    with pytest.raises(SpoolFull):
        spool.write("incoming", spool.new_name(), b"x")
    assert spool.count("incoming") == 0 and spool.count("tmp") == 0


def test_partials_of_dead_writers_are_cleared_but_live_ones_kept(tmp_path: Path) -> None:
    import os

    spool = Spool(tmp_path)
    (tmp_path / "tmp" / "a.dcm.999999999.part").write_bytes(b"half")
    (tmp_path / "tmp" / f"b.dcm.{os.getpid()}.part").write_bytes(b"in progress")
    assert spool.clear_partials() == 1
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"b.dcm.{os.getpid()}.part"]
