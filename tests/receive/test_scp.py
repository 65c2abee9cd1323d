"""The SCP answers success only for what is on disk and in the queue, and refuses clearly otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import text

from node.config import ConfigError, load_settings
from node.factory import Node
from node.persist.models import JobState
from node.receive.scp import accepted_contexts, build_ae, start_scp
from tests.corpus import RETIRED_ULTRASOUND, ct_stored_as

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
    spooled = pydicom.dcmread(node.spool.open_original(job.spool_file))
    original = pydicom.dcmread(CT)
    assert spooled.SOPInstanceUID == original.SOPInstanceUID
    assert spooled.PixelData == original.PixelData
    assert job.sop_class_uid == original.SOPClassUID
    assert original.SOPInstanceUID not in job.sop_instance_hash  # keyed hash, not the UID
    # what routes match on besides the caller: the title it called and its address
    assert (job.calling_ae, job.called_ae, job.source_host, job.route) == ("MODALITY", "DEID_NODE", "127.0.0.1", None)


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


def _send_to_new_node(node_config, path: str, **receive: object):  # type: ignore[no-untyped-def]
    """A node of its own with these receive settings, listening only for this one send."""
    n = Node(load_settings(node_config(name="node-" + ("-".join(sorted(receive)) or "defaults"), receive=receive)))
    n.upgrade_database()
    server = start_scp(n.settings.receive, n.store_handler())
    try:
        return n, _send(n, path)
    finally:
        server.shutdown()


def test_instance_over_the_size_limit_is_refused(node_config) -> None:  # type: ignore[no-untyped-def]
    n, result = _send_to_new_node(node_config, CT, max_instance_bytes=2048)
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


def test_retired_storage_classes_are_accepted_and_queued(node: Node, tmp_path: Path) -> None:
    """An archive sends 1990s ultrasound as Ultrasound Image Storage (Retired), a class
    pynetdicom's own list leaves out: it is accepted, stored and queued like any other."""
    result = _send(node, str(ct_stored_as(tmp_path, RETIRED_ULTRASOUND)))
    assert result is not None and result.Status == 0x0000
    [job] = node.jobs.jobs_in([JobState.RECEIVED])
    assert job.sop_class_uid == RETIRED_ULTRASOUND


def test_a_private_class_is_accepted_only_once_the_site_lists_it(node_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Tried: a vendor's private storage SOP class, first with the shipped list (refused at
    association: nothing stored), then with the site's list naming it (stored and queued)."""
    private_class = "1.2.826.0.1.3680043.8.498.99.1"
    path = str(ct_stored_as(tmp_path, private_class))
    site_list = tmp_path / "classes.yaml"
    site_list.write_text(f'retired: []\nprivate:\n  - {{uid: "{private_class}", name: "Vendor Private Storage"}}\n')
    for classes, accepted in ((None, False), (site_list, True)):
        n, result = _send_to_new_node(node_config, path, **({"storage_classes": str(classes)} if classes else {}))
        assert (result is not None and result.Status == 0x0000) is accepted
        assert len(n.jobs.jobs_in([JobState.RECEIVED])) == int(accepted)


@pytest.mark.parametrize("content, complaint", [
    ("retired: [{uid: not-a-uid}]\n", "is not {uid: <a valid UID>"),
    ("ultrasound: []\n", "expected the lists 'retired' and 'private' only"),
    ("retired: [\n", "not valid YAML"),
])
def test_a_malformed_class_list_is_a_clear_error(node_config, tmp_path: Path, content: str, complaint: str) -> None:  # type: ignore[no-untyped-def]
    classes = tmp_path / "classes.yaml"
    classes.write_text(content)
    settings = load_settings(node_config(receive={"storage_classes": str(classes)}))
    with pytest.raises(ConfigError, match=str(classes)) as raised:
        build_ae(settings.receive)
    assert complaint in str(raised.value)
