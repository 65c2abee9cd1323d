"""A modality (dcmtk storescu) sends real studies to the node; the research PACS (Orthanc)
receives every one of them de-identified, and the node keeps nothing behind."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator

import pydicom
import pytest

from tests.corpus import (RETIRED_ULTRASOUND, ct_stored_as, is_registered, multiframe_ultrasound_with_text,
                          network_corpus)
from tests.nodeproc import SECRET
from tests.nodeproc import NodeProcess, deid_node, job_counts, wait_until
from tests.servers import Orthanc, echoscu, storescu, unavailable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk")), reason="needs Orthanc and dcmtk"),
]


def _all_uids(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
            found.update(str(v) for v in values if str(v) and not is_registered(str(v)))
    return found


@pytest.fixture(scope="module")
def pacs() -> Iterator[Orthanc]:
    with Orthanc(aet="RESEARCH_PACS") as server:
        yield server


@pytest.fixture(scope="module")
def delivered(pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Send the corpus through a running node and wait until the PACS holds all of it."""
    from tests.nodeproc import write_config
    from tests.servers import free_port

    retired = ct_stored_as(tmp_path_factory.mktemp("retired"), RETIRED_ULTRASOUND)
    files = network_corpus(36, include=(multiframe_ultrasound_with_text(), retired))
    port = free_port()
    config = write_config(tmp_path_factory.mktemp("e2e"), port=port, dest_port=pacs.dicom_port, workers=2)
    started = time.monotonic()
    with NodeProcess(config, port) as node:
        storescu(files, port, called_ae="DEID_NODE", calling_ae="MODALITY")
        pacs.wait_for_count(len(files), timeout=600)
        storescu(files[:3], port, called_ae="DEID_NODE", calling_ae="MODALITY")  # the same instances again
        waiting = ("received", "processing", "clean", "forwarding", "failed")
        wait_until(lambda: not any(job_counts(config).get(s, 0) for s in waiting), 600)
        counts = job_counts(config)
        deadline = time.monotonic() + 30
        spool = config.parent / "spool"
        while any((spool / area).iterdir() for area in ("incoming", "clean", "tmp")) and time.monotonic() < deadline:
            time.sleep(0.2)
        allowed_echo = echoscu(port, called_ae="DEID_NODE", calling_ae="ECHOSCU")
        stranger_echo = echoscu(port, called_ae="DEID_NODE", calling_ae="STRANGER")
        status = deid_node(config, "status").stdout
        patients_csv = deid_node(config, "export-mappings", "--kind", "patients").stdout
    return {
        "files": files, "config": config, "node_log": node.log(), "seconds": time.monotonic() - started,
        "echo_ok": allowed_echo, "echo_stranger": stranger_echo, "status": status, "patients_csv": patients_csv,
        "counts": counts,
    }


def test_every_sent_instance_arrives_once_even_when_sent_twice(pacs: Orthanc, delivered) -> None:  # type: ignore[no-untyped-def]
    assert delivered["counts"].get("quarantined", 0) == 0, delivered["status"]
    assert delivered["counts"]["forwarded"] == len(delivered["files"]) + 3  # 3 were sent twice ...
    assert pacs.count() == len(delivered["files"])  # ... under the same new UIDs, so stored once
    print(f"e2e: {len(delivered['files'])} instances in {delivered['seconds']:.1f} s")


def test_an_instance_of_a_retired_storage_class_arrives_in_its_class(pacs: Orthanc, delivered) -> None:  # type: ignore[no-untyped-def]
    """The corpus holds one instance sent as Ultrasound Image Storage (Retired), which the node
    accepts from its class list (config/storage-sop-classes.yaml); it reaches the PACS clean."""
    stored = [pacs.dataset(instance) for instance in pacs.instances()]
    retired = [ds for ds in stored if ds.SOPClassUID == RETIRED_ULTRASOUND]
    assert len(retired) == 1 and retired[0].PatientIdentityRemoved == "YES"


def test_no_original_identifier_reaches_the_pacs(pacs: Orthanc, delivered) -> None:  # type: ignore[no-untyped-def]
    originals = [pydicom.dcmread(f) for f in delivered["files"]]
    original_uids = set().union(*(_all_uids(ds) for ds in originals))
    ids = {str(ds.PatientID) for ds in originals if len(str(ds.get("PatientID", ""))) >= 3}
    names = {str(ds.PatientName) for ds in originals if len(str(ds.get("PatientName", ""))) >= 4}
    births = {str(ds.PatientBirthDate) for ds in originals if ds.get("PatientBirthDate")}
    for instance in pacs.instances():
        raw = pacs.file(instance)
        ds = pydicom.dcmread(__import__("io").BytesIO(raw))
        assert str(ds.PatientID) not in ids
        assert str(ds.get("PatientName", "")) not in names
        assert str(ds.get("PatientBirthDate", "")) not in births
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.get("DeidentificationMethod")
        leaked = {uid for uid in original_uids if uid.encode() in raw}
        assert not leaked, f"{len(leaked)} original UIDs found in a forwarded instance"


def test_same_patient_gets_the_same_pseudonym_everywhere(pacs: Orthanc, delivered) -> None:  # type: ignore[no-untyped-def]
    by_new_study: dict[str, set[str]] = defaultdict(set)
    for instance in pacs.instances():
        ds = pacs.dataset(instance)
        by_new_study[str(ds.StudyInstanceUID)].add(str(ds.PatientID))
    assert all(len(p) == 1 for p in by_new_study.values())
    mapping = dict(line.split(",", 1) for line in delivered["patients_csv"].splitlines()[1:])
    originals = {str(pydicom.dcmread(f, stop_before_pixels=True).get("PatientID", "")) for f in delivered["files"]}
    assert originals <= set(mapping)
    assert len(set(mapping.values())) == len(mapping)  # distinct patients stay distinct
    received = {str(pacs.dataset(i).PatientID) for i in pacs.instances()}
    assert received == {mapping[o] for o in originals}


def test_spool_is_empty_afterwards(delivered) -> None:  # type: ignore[no-untyped-def]
    spool = delivered["config"].parent / "spool"
    for area in ("incoming", "clean", "tmp", "quarantine"):
        assert list((spool / area).iterdir()) == [], area
    assert "forwarded" in delivered["status"]


def test_echo_from_allowed_ae_succeeds_and_stranger_is_rejected(delivered) -> None:  # type: ignore[no-untyped-def]
    assert delivered["echo_ok"].returncode == 0
    assert delivered["echo_stranger"].returncode != 0
    assert "Rejected" in delivered["echo_stranger"].stderr + delivered["echo_stranger"].stdout


def test_node_log_carries_no_patient_identifiers(delivered) -> None:  # type: ignore[no-untyped-def]
    """Each identifier is looked for as a whole token: test IDs such as "0010" or "99000" also turn
    up inside timestamps' microseconds, durations and pids, which would make this test flaky."""
    log = delivered["node_log"]
    assert '"event": "forwarded"' in log
    for f in delivered["files"]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for value in (str(ds.get("PatientID", "")), str(ds.get("PatientName", "")), str(ds.SOPInstanceUID)):
            if len(value.strip("^= ")) >= 4:  # "^^^^" is an empty name, not an identifier
                assert not re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", log), value


def test_burned_in_text_of_a_multiframe_ultrasound_arrives_blacked_out(pacs: Orthanc, delivered) -> None:  # type: ignore[no-untyped-def]
    from node.deid.pseudonyms import KeyedDerivation

    original = pydicom.dcmread(multiframe_ultrasound_with_text())
    new_uid = KeyedDerivation(SECRET.encode()).uid(str(original.SOPInstanceUID))
    [stored] = [d for d in map(pacs.dataset, pacs.instances()) if str(d.SOPInstanceUID) == new_uid]
    before, after = original.pixel_array, stored.pixel_array
    assert after.shape == before.shape == (2, 600, 800)
    assert before[:, :59].max() > 200  # the header band carries text ...
    assert after[:, :59].max() == 0  # ... and arrives black on every frame
    assert (after[:, 59:] == before[:, 59:]).mean() > 0.99  # the image itself is left alone
    assert stored.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in stored.DeidentificationMethodCodeSequence}
