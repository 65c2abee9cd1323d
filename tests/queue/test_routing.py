"""The worker picks each instance's route by what only the dataset says (modality, SOP class),
and quarantines, with the reason, an instance that no route takes after all."""

from __future__ import annotations

from pathlib import Path

from node.config import load_settings
from node.factory import Node
from node.persist.models import JobState
from tests.nodeproc import write_config
from tests.servers import free_port
from tests.synthetic import write_series

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_the_worker_routes_by_modality_and_quarantines_what_no_route_takes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node", port=free_port(), pixels=False, routes=[
        {"name": "ct", "calling_ae_titles": ["MODALITY"], "modalities": ["CT"], "profile": "basic.yaml",
         "project": "ct-study", "destinations": ["folder"]},
        {"name": "mr", "calling_ae_titles": ["MODALITY", "OTHER"], "modalities": ["MR"], "profile": "basic.yaml",
         "destinations": ["folder"]}],
        destinations={"folder": {"kind": "folder", "path": str(tmp_path / "outbox")}})
    node = Node(load_settings(config))
    try:
        node.upgrade_database()
        handler = node.store_handler()
        [ct] = write_series(tmp_path / "ct", 1, patient_id="FAKE-ROUTING-1")
        queued = {caller: handler.admit((ct.read_bytes(),), sop_class=CT, sop_instance=f"1.2.3.{n}", calling_ae=caller,
                                        called_ae="DEID_NODE", source_host="127.0.0.1")
                  for n, caller in enumerate(("MODALITY", "OTHER"))}
        worker = node.deid_worker()
        while worker.run_once():
            pass
        taken = node.jobs.get(queued["MODALITY"])
        assert (taken.state, taken.route, taken.project) == (JobState.CLEAN, "ct", "ct-study")
        refused = node.jobs.get(queued["OTHER"])
        assert refused.state == JobState.QUARANTINED
        assert refused.last_error == "no route takes this instance (caller OTHER, modality CT)"
        assert node.spool.path("quarantine", refused.spool_file).exists()
    finally:
        node.engine.dispose()
