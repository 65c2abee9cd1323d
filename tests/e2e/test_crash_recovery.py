"""kill -9 at random points, over and over: every instance acknowledged with success is
forwarded after restart, none twice under different UIDs, none un-de-identified.

Tried, per round (20 rounds): a sender streams synthetic CT instances over one association
while, after a random delay, either the whole node (SCP mid-association, workers and
forwarder mid-job) or one de-identification worker is killed with SIGKILL. The node is
restarted for the next round; at the end it drains the queue into Orthanc.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from node.deid.pseudonyms import KeyedDerivation
from tests.nodeproc import SECRET, NodeProcess, job_counts, wait_until, write_config
from tests.servers import Orthanc, free_port, unavailable
from tests.synthetic import write_series

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc")), reason="needs Orthanc")]

ROUNDS = int(os.environ.get("DEID_CRASH_ROUNDS", "20"))
PER_ROUND = 6


def _send_all(port: int, files: list[Path], acknowledged: list[str], first_ack: threading.Event) -> None:
    """Send until done or the association dies; record the instances answered with 0x0000."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DEID_NODE")
    if not assoc.is_established:
        return
    for path in files:
        ds = pydicom.dcmread(path)
        try:
            status = assoc.send_c_store(ds)
        except Exception:  # noqa: BLE001 - the node died mid-association
            break
        if status and status.get("Status") == 0x0000:
            acknowledged.append(str(ds.SOPInstanceUID))
            first_ack.set()
        if not assoc.is_established:
            break
    if assoc.is_established:
        assoc.release()


def _children(pid: int) -> list[int]:
    """The node's worker and forwarder processes (not multiprocessing's resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    lines = {child: _command_line(child) for child in map(int, out.split())}
    return [child for child, line in lines.items() if line is not None and "resource_tracker" not in line]


def _command_line(pid: int) -> str | None:
    """A process's command line; None once it is gone (a process can exit between pgrep and
    this read: the supervisor replaces workers)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except FileNotFoundError:
        return None


def test_acknowledged_instances_survive_repeated_kill_9(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    with Orthanc() as pacs:
        port = free_port()
        config = write_config(tmp_path / "node", port=port, dest_port=pacs.dicom_port, workers=2, pixels=False)
        acknowledged: list[str] = []
        sent: list[Path] = []
        whole_node_kills = worker_kills = 0
        node: NodeProcess | None = None
        try:
            for round_no in range(ROUNDS):
                files = write_series(tmp_path / f"round{round_no}", PER_ROUND, patient_id=f"FAKE-CRASH-{round_no % 3}",
                                     name=f"CRASHTEST^PATIENT{round_no % 3}")
                sent.extend(files)
                node = node or NodeProcess(config, port).start()
                first_ack = threading.Event()
                sender = threading.Thread(target=_send_all, args=(port, files, acknowledged, first_ack))
                sender.start()
                first_ack.wait(20)  # the kill lands while instances are in flight, not before any
                time.sleep(rng.uniform(0.0, 0.6))
                workers = _children(node.process.pid)
                if round_no % 2 == 0 or not workers:
                    node.kill()  # SCP mid-association, workers and forwarder mid-job
                    node = None
                    whole_node_kills += 1
                else:
                    with contextlib.suppress(ProcessLookupError):  # it may have exited since it was listed
                        os.kill(rng.choice(workers), signal.SIGKILL)  # the supervisor starts a new one
                    worker_kills += 1
                sender.join(30)
        finally:  # a failed round must not leave a node running
            if node is not None:
                node.stop()
        with NodeProcess(config, port) as node:  # recovery: drain everything
            waiting = ("received", "processing", "clean", "forwarding", "failed")
            assert wait_until(lambda: not any(job_counts(config).get(s, 0) for s in waiting), 240)
            log = node.log()
        derivation = KeyedDerivation(SECRET.encode())
        expected_new = {derivation.uid(uid) for uid in acknowledged}
        stored = {str(pacs.dataset(i).SOPInstanceUID) for i in pacs.instances()}
        originals = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sent}
        print(f"kill -9 rounds: {ROUNDS} (whole node {whole_node_kills}, worker {worker_kills}); "
              f"instances sent: {len(sent)}, acknowledged: {len(acknowledged)}, stored: {len(stored)}, "
              f"lost: {len(expected_new - stored)}")
        assert acknowledged, "the sender never got an acknowledgement: the test proves nothing"
        assert expected_new <= stored, f"{len(expected_new - stored)} acknowledged instances lost"
        assert stored <= {derivation.uid(uid) for uid in originals}, "an instance arrived under an unexpected UID"
        assert not stored & originals, "an original UID reached the destination"
        assert "quarantined" not in log
        for value in ("CRASHTEST", "FAKE-CRASH"):
            assert value not in log
