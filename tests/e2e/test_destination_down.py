"""The research PACS goes away: instances wait (capped backoff) for as long as
`forward.give_up_after_seconds`, `status` says since when, and all arrive once it is back, with
nothing quarantined however many tries the outage took; past the age limit they are quarantined
and `retry` sends them later."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.nodeproc import NodeProcess, deid_node, job_counts, wait_until, write_config
from tests.servers import Orthanc, free_port, storescu, unavailable
from tests.synthetic import write_series

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk")),
                                                  reason="needs Orthanc and dcmtk")]


def test_an_outage_longer_than_many_tries_ends_with_everything_delivered_and_nothing_quarantined(
        tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 5, patient_id="FAKE-DOWN-1", name="DOWNTEST^PATIENT")
    with Orthanc() as pacs:
        port = free_port()
        # max_attempts 2 with 0.1-0.3 s backoff: before deliveries, this outage quarantined everything
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, pixels=False,
                              forward={"max_attempts": 2, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.3})
        with NodeProcess(config, port) as node:
            pacs.stop()  # tried: the destination refuses connections
            storescu(files, port, called_ae="DEID_NODE")
            assert wait_until(lambda: job_counts(config).get("clean") == 5)
            assert wait_until(lambda: "waiting for default since" in deid_node(config, "status").stdout, timeout=30)
            status = deid_node(config, "status").stdout
            assert re.search(r"^waiting for default since \S+Z: 5 to deliver$", status, re.M), status
            time.sleep(4)  # a dozen tries against a dead port
            assert job_counts(config).get("quarantined") == 0
            pacs.start()
            assert pacs.wait_for_count(5, timeout=600) == 5
            assert wait_until(lambda: job_counts(config).get("forwarded") == 5)
            assert job_counts(config).get("quarantined") == 0
            assert "waiting for" not in deid_node(config, "status").stdout
            assert "destination_waiting" in node.log()


def test_past_the_age_limit_deliveries_are_quarantined_and_retry_sends_them(tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 3, patient_id="FAKE-DOWN-2", name="DOWNTEST^QUARANTINE")
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, pixels=False,
                              forward={"give_up_after_seconds": 1, "backoff_initial_seconds": 0.1,
                                       "backoff_max_seconds": 0.2})
        with NodeProcess(config, port):
            pacs.stop()
            storescu(files, port, called_ae="DEID_NODE")
            assert wait_until(lambda: job_counts(config).get("quarantined") == 3)
            listing = deid_node(config, "quarantine", "list", "--destination", "default").stdout
            assert listing.count("default unreachable for more than 1 s") == 3
            assert "DOWNTEST" not in listing and "FAKE-DOWN" not in listing
            spool = config.parent / "spool"
            assert len(list((spool / "quarantine").iterdir())) == 3
            pacs.start()
            assert "released 3 quarantined" in deid_node(config, "retry", "--all").stdout
            assert pacs.wait_for_count(3, timeout=600) == 3
            assert wait_until(lambda: job_counts(config).get("forwarded") == 3)
            assert wait_until(lambda: not any(any((spool / a).iterdir()) for a in ("incoming", "clean", "quarantine")))
