"""The MIDI-B style suite through the network path: storescu -> node (TCIA profile) -> Orthanc,
scored on what Orthanc stored and on the mapping CSVs the node exports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conformance.generate import generate_corpus
from tests.conformance.score import score
from tests.nodeproc import NodeProcess, deid_node, write_config
from tests.servers import Orthanc, free_port, storescu, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk")),
                                                  reason="needs Orthanc and dcmtk")]
REQUIRED = 0.999


def test_network_path_passes_at_least_99_9_percent_of_midi_b_actions(tmp_path: Path) -> None:
    key = generate_corpus(tmp_path / "corpus", seed=0)
    files = [tmp_path / "corpus" / name for name in key.files]
    output = tmp_path / "output"
    output.mkdir()
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, workers=2,
                              profile="tcia.yaml")
        started = time.monotonic()
        with NodeProcess(config, port) as node:
            storescu(files, port, called_ae="DEID_NODE")
            assert pacs.wait_for_count(len(files), timeout=600) == len(files), node.log()[-2000:]
            uid_csv = tmp_path / "uids.csv"
            patient_csv = tmp_path / "patients.csv"
            deid_node(config, "export-mappings", "--kind", "uids", "-o", str(uid_csv))
            deid_node(config, "export-mappings", "--kind", "patients", "-o", str(patient_csv))
        for instance in pacs.instances():
            (output / f"{instance}.dcm").write_bytes(pacs.file(instance))
    result = score(output, uid_csv, patient_csv, key)
    print(f"\nnetwork conformance ({len(files)} instances, {time.monotonic() - started:.1f} s):\n{result.table()}")
    assert result.fraction >= REQUIRED, "\n".join(result.failures[:40])
