"""One node, two projects: two callers, two routes, two profiles; a research PACS (Orthanc over
C-STORE), a folder and a second Orthanc over DICOMweb (STOW-RS). Each instance reaches exactly its route's destinations, cleaned by its
route's profile, under its project's pseudonyms; a PACS that is down holds back no other
destination; kill -9 in the middle of a fan-out loses nothing."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from node.config import load_settings
from node.factory import Node
from tests.nodeproc import NodeProcess, deid_node, node_env, wait_until, write_config
from tests.servers import Orthanc, free_port, storescu, unavailable
from tests.synthetic import write_series

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk")),
                                                  reason="needs Orthanc and dcmtk")]

RETAIN_PATIENT_CHARACTERISTICS = "113108"  # CID 7050: an option of the TCIA profile, not of the Basic one


def _two_routes(directory: Path, port: int, pacs: Orthanc, web: Orthanc | None = None) -> Path:
    """Route `research` (TCIA profile, project alpha) to the PACS and the folder; route `teaching`
    (Basic profile, project beta) to the folder and, given `web`, over STOW-RS to it."""
    destinations: dict[str, object] = {
        "pacs": {"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port},
        "folder": {"kind": "folder", "path": str(directory / "outbox")},
    }
    if web is not None:
        destinations["web"] = {"kind": "stow", "url": web.stow_url}
    return write_config(directory, port=port, pixels=False, workers=2, routes=[
        {"name": "research", "calling_ae_titles": ["MODALITY"], "profile": "tcia.yaml", "project": "alpha",
         "destinations": ["pacs", "folder"]},
        {"name": "teaching", "calling_ae_titles": ["TEACHING"], "profile": "basic.yaml", "project": "beta",
         "destinations": ["folder", *(["web"] if web is not None else [])]},
    ], destinations=destinations, forward={"backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.5})


def _forwarded(config: Path) -> Callable[[], int]:
    """How many jobs are forwarded, read in this process (a CLI process per poll costs seconds)."""
    jobs = Node(load_settings(config)).jobs
    return lambda: jobs.status().by_state["forwarded"]


def _folder(config: Path, project: str) -> dict[str, pydicom.Dataset]:
    """The clean files a project has in the folder destination, by SOPInstanceUID."""
    found = {}
    for path in sorted((config.parent / "outbox" / project).rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert path.relative_to(config.parent / "outbox") == Path(
            project, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
        found[str(ds.SOPInstanceUID)] = ds
    return found


def _method_codes(ds: pydicom.Dataset) -> set[str]:
    return {str(item.CodeValue) for item in ds.get("DeidentificationMethodCodeSequence", [])}


@pytest.mark.skipif(bool(unavailable("orthanc-dicomweb")), reason="needs Orthanc's DICOMweb plugin")
def test_each_route_reaches_its_destinations_with_its_profile_and_project_while_the_pacs_is_down(
        tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 4, patient_id="FAKE-ROUTES-1", name="ROUTESTEST^PATIENT")
    with Orthanc() as pacs, Orthanc(aet="WEB_PACS", dicomweb=True) as web:
        port = free_port()
        config = _two_routes(tmp_path / "node", port, pacs, web)
        pacs.stop()
        with NodeProcess(config, port):
            forwarded = _forwarded(config)
            storescu(files, port, called_ae="DEID_NODE", calling_ae="MODALITY")
            storescu(files, port, called_ae="DEID_NODE", calling_ae="TEACHING")  # the same patient, instances
            # the folder gets everything while the PACS is down
            assert wait_until(lambda: len(_folder(config, "alpha")) == 4 and len(_folder(config, "beta")) == 4, 120)
            assert wait_until(lambda: forwarded() == 4, 60)  # the teaching route's
            assert web.count() == 4
            assert "waiting for pacs since" in deid_node(config, "status").stdout
            pacs.start()
            assert pacs.wait_for_count(4, timeout=120) == 4
            assert wait_until(lambda: forwarded() == 8, 60)
            time.sleep(1)  # nothing more arrives
            assert pacs.count() == 4
            alpha, beta = _folder(config, "alpha"), _folder(config, "beta")
            exported = {project: deid_node(config, "export-mappings", "--project", project).stdout.splitlines()
                        for project in ("alpha", "beta")}
        in_pacs = {str(pacs.dataset(i).SOPInstanceUID): pacs.dataset(i) for i in pacs.instances()}
        on_web = {str(web.dataset(i).SOPInstanceUID) for i in web.instances()}
    assert set(in_pacs) == set(alpha) and len(alpha) == len(beta) == 4
    assert on_web == set(beta)
    assert not set(alpha) & set(beta)  # the same instances, unrelated UIDs per project
    [alpha_patient] = {ds.PatientID for ds in alpha.values()} | {ds.PatientID for ds in in_pacs.values()}
    [beta_patient] = {ds.PatientID for ds in beta.values()}
    assert alpha_patient != beta_patient
    assert {ds.StudyDate for ds in alpha.values()} != {ds.StudyDate for ds in beta.values()}  # own date offsets
    assert exported["alpha"][-1].endswith(f",{alpha_patient}") and exported["beta"][-1].endswith(f",{beta_patient}")
    assert all(RETAIN_PATIENT_CHARACTERISTICS in _method_codes(ds) for ds in alpha.values())  # TCIA
    assert all(RETAIN_PATIENT_CHARACTERISTICS not in _method_codes(ds) for ds in beta.values())  # Basic
    for ds in [*alpha.values(), *beta.values()]:
        assert "ROUTESTEST" not in str(ds.PatientName) and ds.PatientID != "FAKE-ROUTES-1"
    spool = config.parent / "spool"
    assert not any(any((spool / area).iterdir()) for area in ("incoming", "clean", "quarantine"))


def test_kill_9_during_a_fan_out_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    files = write_series(tmp_path / "study", 12, patient_id="FAKE-ROUTES-2", name="ROUTESTEST^CRASH")
    with Orthanc() as pacs:
        port = free_port()
        config = _two_routes(tmp_path / "node", port, pacs)
        node = NodeProcess(config, port).start()
        try:
            storescu(files, port, called_ae="DEID_NODE", calling_ae="MODALITY")  # acknowledged: durable
            assert wait_until(lambda: len(list((config.parent / "outbox").rglob("*.dcm"))) >= 2, 120, 0.05)
            node.kill()  # workers and both forwarders mid-batch
        finally:
            node.stop()
        with NodeProcess(config, port):
            forwarded = _forwarded(config)
            assert wait_until(lambda: forwarded() == 12, 240)
            assert pacs.wait_for_count(12, timeout=60) == 12
        in_folder = _folder(config, "alpha")
        assert len(in_folder) == 12
        assert set(in_folder) == {str(pacs.dataset(i).SOPInstanceUID) for i in pacs.instances()}
        assert not list((config.parent / "outbox").rglob("*.part"))  # no half-written file left behind


def test_the_embedded_default_config_puts_a_clean_file_in_the_outbox(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """README's first run: `./scripts/run-node.sh` (the shipped config/node.yaml) and one storescu."""
    shipped = Path(__file__).resolve().parents[2] / "config"
    shutil.copytree(shipped, tmp_path / "config")
    port = free_port()
    monkeypatch.setenv("DEID_PORT", str(port))
    [original] = write_series(tmp_path / "study", 1, patient_id="FAKE-FIRST-RUN", name="FIRSTRUN^PATIENT")
    with NodeProcess(tmp_path / "config" / "node.yaml", port):
        storescu([original], port, called_ae="DEID_NODE", calling_ae="STORESCU")
        outbox = tmp_path / "var" / "outbox" / "default"
        assert wait_until(lambda: any(outbox.rglob("*.dcm")), 120)
    [clean] = outbox.rglob("*.dcm")
    dump = subprocess.run(["dcmdump", str(clean)], capture_output=True, text=True, env=node_env(), check=True).stdout
    assert "(0010,0020)" in dump and "FAKE-FIRST-RUN" not in dump and "FIRSTRUN" not in dump
    assert pydicom.dcmread(clean).PatientID.startswith("ANON-")
