"""The research PACS goes away: instances wait and retry with backoff, `status` shows the
backlog, and all arrive once it is back; past the configured tries they are quarantined and
`retry` sends them later."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.nodeproc import NodeProcess, deid_node, job_counts, wait_until, write_config
from tests.servers import Orthanc, free_port, storescu, unavailable
from tests.synthetic import write_series

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk")),
                                                  reason="needs Orthanc and dcmtk")]


def test_instances_wait_while_the_pacs_is_down_and_arrive_when_it_is_back(tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 5, patient_id="FAKE-DOWN-1", name="DOWNTEST^PATIENT")
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, pixels=False,
                              forward={"max_attempts": 50, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1})
        with NodeProcess(config, port) as node:
            pacs.stop()  # tried: the destination refuses connections
            storescu(files, port, called_ae="DEID_NODE")
            assert wait_until(lambda: job_counts(config).get("failed", 0) + job_counts(config).get("forwarding", 0) == 5)
            status = deid_node(config, "status").stdout
            assert "failing to RESEARCH_PACS@127.0.0.1" in status
            time.sleep(2)  # several backoff rounds against a dead port
            pacs.start()
            assert pacs.wait_for_count(5, timeout=600) == 5
            assert wait_until(lambda: job_counts(config).get("forwarded") == 5)
            assert "forward_retry" in node.log()


def test_after_max_tries_instances_are_quarantined_and_retry_sends_them(tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 3, patient_id="FAKE-DOWN-2", name="DOWNTEST^QUARANTINE")
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, pixels=False,
                              forward={"max_attempts": 2, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.2})
        with NodeProcess(config, port):
            pacs.stop()
            storescu(files, port, called_ae="DEID_NODE")
            assert wait_until(lambda: job_counts(config).get("quarantined") == 3)
            listing = deid_node(config, "quarantine", "list").stdout
            assert listing.count("forward failed 2 times") == 3
            assert "DOWNTEST" not in listing and "FAKE-DOWN" not in listing
            spool = config.parent / "spool"
            assert len(list((spool / "quarantine").iterdir())) == 3
            pacs.start()
            assert "released 3 quarantined" in deid_node(config, "retry", "--all").stdout
            assert pacs.wait_for_count(3, timeout=600) == 3
            assert wait_until(lambda: job_counts(config).get("forwarded") == 3)
            assert wait_until(lambda: not any(any((spool / a).iterdir()) for a in ("incoming", "clean", "quarantine")))
