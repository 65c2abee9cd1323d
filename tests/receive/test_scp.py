"""The SCP answers success only for what is on disk and in the queue, and refuses clearly otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import text

from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from node.receive.scp import accepted_contexts, build_ae, start_scp

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


def test_each_association_negotiates_on_its_own_copy_of_the_contexts(node: Node) -> None:
    """The contexts are copied cheaply per association (see accepted_contexts); what one
    association negotiates must not leak into the next: two associations asking for different
    transfer syntaxes of the same SOP class both get exactly what they asked for, and the
    server's contexts still offer every syntax afterwards."""
    import copy

    contexts = accepted_contexts(build_ae(node.settings.receive))
    ct = next(i for i, c in enumerate(contexts) if c.abstract_syntax == CTImageStorage)
    twin = copy.deepcopy(contexts)
    twin[ct].transfer_syntax = [ImplicitVRLittleEndian]
    assert len(contexts[ct].transfer_syntax) == len(ALL_TRANSFER_SYNTAXES)
    assert [(c.abstract_syntax, c.transfer_syntax) for c in copy.deepcopy(contexts)] == \
        [(c.abstract_syntax, c.transfer_syntax) for c in contexts]

    ds = pydicom.dcmread(CT)
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ds.SOPClassUID, syntax)
        assoc = ae.associate("127.0.0.1", node.settings.receive.port, ae_title=node.settings.receive.ae_title)
        assert assoc.is_established
        try:
            assert [c.transfer_syntax[0] for c in assoc.accepted_contexts] == [syntax]
        finally:
            assoc.release()
