"""Garbage in: each bad instance gets a failure status at the sender or a quarantine entry
with a reason; none crashes a worker; none reaches the research PACS unclean; a good instance
sent after all of them still arrives. Deeply nested sequences are legal DICOM: they must be
de-identified at every depth and forwarded."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, _config

from tests.nodeproc import NodeProcess, deid_node, write_config
from tests.servers import Orthanc, free_port, unavailable
from tests.synthetic import synthetic_ct

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc")), reason="needs Orthanc")]

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NESTING = 64  # deeper than any real IOD (writing 400 levels exhausted 17 GB in pydicom when tried)


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def truncated(tmp: Path) -> Path:
    raw = _save(synthetic_ct(patient_id="FAKE-BAD-1"), tmp / "full.dcm").read_bytes()
    (tmp / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    return tmp / "truncated.dcm"


def garbage(tmp: Path) -> Path:
    """A valid preamble and file meta, then random bytes where the dataset should be."""
    path = _save(synthetic_ct(patient_id="FAKE-BAD-2"), tmp / "garbage.dcm")
    meta = pydicom.filereader.read_file_meta_info(path)
    end_of_meta = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)
    path.write_bytes(path.read_bytes()[:end_of_meta] + os.urandom(4096))
    return path


def without_sop_instance_uid(tmp: Path) -> Path:
    ds = synthetic_ct(patient_id="FAKE-BAD-3")
    del ds.SOPInstanceUID
    return _save(ds, tmp / "no-sop-uid.dcm")


def without_patient_id(tmp: Path) -> Path:
    ds = synthetic_ct(patient_id="FAKE-BAD-4")
    del ds.PatientID
    return _save(ds, tmp / "no-patient-id.dcm")


def inconsistent_pixels(tmp: Path) -> Path:
    ds = synthetic_ct(patient_id="FAKE-BAD-5")
    ds.Rows = ds.Rows * 4  # PixelData is now far too short for Rows x Columns
    return _save(ds, tmp / "bad-pixels.dcm")


def deeply_nested(tmp: Path) -> Path:
    ds = synthetic_ct(patient_id="FAKE-BAD-6")
    item = Dataset()
    item.PatientName = "NESTED^FAKE"
    for _ in range(NESTING):
        outer = Dataset()
        outer.ReferencedStudySequence = Sequence([item])
        item = outer
    ds.ReferencedStudySequence = Sequence([item])
    return _save(ds, tmp / "nested.dcm")


def huge_private(tmp: Path) -> Path:
    ds = synthetic_ct(patient_id="FAKE-BAD-7")
    block = ds.private_block(0x0041, "FAKE VENDOR", create=True)
    block.add_new(0x10, "OB", b"\0" * (12 * 1024 * 1024))
    return _save(ds, tmp / "huge-private.dcm")


BAD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "truncated file": truncated,
    "garbage bytes after the file meta": garbage,
    "no SOPInstanceUID": without_sop_instance_uid,
    "no PatientID": without_patient_id,
    "Rows x Columns larger than PixelData": inconsistent_pixels,
    "12 MiB private element over an 8 MiB limit": huge_private,
}


def _send_raw(port: int, path: Path, sop_class: str = CT_STORAGE) -> int | None:
    """Send the file's bytes as they are (no parse on our side); the status, or None if refused."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="DEID_NODE")
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(path)
        return int(status.Status) if status and "Status" in status else None
    except (ValueError, AttributeError):
        return None
    finally:
        if assoc.is_established:
            assoc.release()


def test_bad_inputs_are_refused_or_quarantined_and_never_forwarded(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, workers=2,
                              receive={"max_instance_bytes": 8 * 1024 * 1024})
        with NodeProcess(config, port) as node:
            outcomes: dict[str, int | None] = {}
            for case, make in BAD_INPUTS.items():
                outcomes[case] = _send_raw(port, make(tmp_path))
            unknown = _save(synthetic_ct(patient_id="FAKE-BAD-8"), tmp_path / "unknown-class.dcm")
            outcomes["unknown SOP class"] = _send_raw(port, unknown, sop_class="1.2.3.999.1")
            good = _save(synthetic_ct(patient_id="FAKE-GOOD", name="GOODTEST^PATIENT"), tmp_path / "good.dcm")
            assert _send_raw(port, good) == 0x0000
            assert _send_raw(port, deeply_nested(tmp_path)) == 0x0000
            assert pacs.wait_for_count(2, timeout=600) == 2
            time.sleep(1.0)
            accepted = [case for case, status in outcomes.items() if status == 0x0000]
            quarantine = deid_node(config, "quarantine", "list").stdout
            log = node.log()
        assert pacs.count() == 2, "a bad instance reached the research PACS"
        for instance in pacs.instances():
            raw = pacs.file(instance)
            assert b"FAKE-" not in raw and b"NESTED^FAKE" not in raw and b"GOODTEST" not in raw
        assert outcomes["unknown SOP class"] is None  # refused at presentation-context negotiation
        assert outcomes["12 MiB private element over an 8 MiB limit"] == 0xA700
        # every instance the node acknowledged is in quarantine with a reason, one line each
        assert len([line for line in quarantine.splitlines() if line.strip()]) == len(accepted), (outcomes, quarantine)
        for reason in ("missing PatientID", "missing SOPInstanceUID"):
            assert reason in quarantine
        assert "Traceback" not in log
        for fake in ("FAKE-BAD", "NESTED^FAKE", "GOODTEST"):
            assert fake not in log and fake not in quarantine
        print({case: (f"0x{s:04X}" if s is not None else "refused") for case, s in outcomes.items()})
        print(quarantine)
