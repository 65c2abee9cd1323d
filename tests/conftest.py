"""Shared fixtures: real servers (Orthanc, PostgreSQL) started once per session on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodeproc import SECRET, write_config
from tests.servers import Orthanc, PostgresServer, free_port


@pytest.fixture(scope="session")
def orthanc() -> Iterator[Orthanc]:
    with Orthanc() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def node_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A factory for node configs in this test's tmp dir; DEID_SECRET set for in-process use."""
    monkeypatch.setenv("DEID_SECRET", SECRET)

    def make(**kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("port", free_port())
        kwargs.setdefault("dest_port", free_port())
        return write_config(tmp_path / kwargs.pop("name", "node"), **kwargs)

    return make
