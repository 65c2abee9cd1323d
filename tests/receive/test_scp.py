"""The SCP answers success only for what is on disk and in the queue, and refuses clearly otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from sqlalchemy import text

from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from node.receive.scp import start_scp

CT = get_testdata_file("CT_small.dcm")


@pytest.fixture
def node(node_config) -> Iterator[Node]:  # type: ignore[no-untyped-def]
    n = Node(load_settings(node_config()))
    n.upgrade_database()
    server = start_scp(n.settings.receive, n.store_handler())
    yield n
    server.shutdown()


def _send(node: Node, path: str, calling: str = "MODALITY"):  # type: ignore[no-untyped-def]
    ds = pydicom.dcmread(path)
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.settings.receive.port, ae_title=node.settings.receive.ae_title)
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def test_success_means_the_instance_is_spooled_and_queued(node: Node) -> None:
    result = _send(node, CT)
    assert result.Status == 0x0000
    [job] = node.jobs.jobs_in([JobState.RECEIVED])
    spooled = pydicom.dcmread(node.spool.path("incoming", job.spool_file))
    original = pydicom.dcmread(CT)
    assert spooled.SOPInstanceUID == original.SOPInstanceUID
    assert spooled.PixelData == original.PixelData
    assert job.sop_class_uid == original.SOPClassUID
    assert original.SOPInstanceUID not in job.sop_instance_hash  # keyed hash, not the UID


def test_unknown_calling_ae_is_rejected_at_association(node: Node) -> None:
    assert _send(node, CT, calling="STRANGER") is None
    assert node.jobs.jobs_in(list(JobState)) == []


def test_full_spool_refuses_with_out_of_resources_and_keeps_nothing(node: Node) -> None:
    node.spool.min_free_bytes = 10**18  # tried: a disk with less free space than the reserve
    result = _send(node, CT)
    assert result.Status == 0xA700
    assert "spool is full" in result.ErrorComment
    assert node.spool.count("incoming") == 0 and node.spool.count("tmp") == 0
    assert node.jobs.jobs_in(list(JobState)) == []


def test_database_unavailable_refuses_and_removes_the_spooled_file(node: Node) -> None:
    with node.engine.begin() as connection:  # tried: the job table cannot be written
        connection.execute(text("ALTER TABLE jobs RENAME TO jobs_away"))
    result = _send(node, CT)
    assert result.Status == 0xA700
    assert "database unavailable" in result.ErrorComment
    assert node.spool.count("incoming") == 0 and node.spool.count("tmp") == 0


def test_instance_over_the_size_limit_is_refused(node_config) -> None:  # type: ignore[no-untyped-def]
    n = Node(load_settings(node_config(receive={"max_instance_bytes": 2048})))
    n.upgrade_database()
    server = start_scp(n.settings.receive, n.store_handler())
    try:
        result = _send(n, CT)
    finally:
        server.shutdown()
    assert result.Status == 0xA700
    assert n.spool.count("incoming") == 0
