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
