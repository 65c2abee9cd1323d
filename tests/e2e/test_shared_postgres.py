"""Two nodes, one memory: two `deid-node serve` processes (two workers each) share one PostgreSQL
and one secret; a modality sends the same study to both at the same moment; both forward to one
research PACS. Every patient, UID and date offset must come out the same from both nodes, with
exactly one mapping row per original."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.valuerep import DA
from sqlalchemy import Engine, func, select

from node.deid.pseudonyms import KeyedDerivation
from node.persist.db import make_engine, make_session_factory
from node.persist.mappings import MappingStore, OriginalCipher
from node.persist.models import Job, JobState, Patient, UidMapping
from tests.corpus import is_registered, network_corpus
from tests.nodeproc import SECRET, NodeProcess, write_config
from tests.servers import Orthanc, PostgresServer, free_port, storescu, unavailable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.skipif(bool(unavailable("orthanc") or unavailable("dcmtk") or unavailable("postgres")),
                       reason="needs Orthanc, dcmtk and PostgreSQL"),
]

NODES = ("node-a", "node-b")
STUDY_SIZE = 4


def one_patients_study() -> list[Path]:
    """Instances of the corpus's best-represented patient: one study, several transfer syntaxes."""
    corpus = network_corpus(36)
    patient_of = {path: str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID", "")) for path in corpus}
    patient, _ = Counter(p for p in patient_of.values() if p).most_common(1)[0]
    return [path for path in corpus if patient_of[path] == patient][:STUDY_SIZE]


def _instance_uids(ds: pydicom.Dataset) -> set[str]:
    return {str(v) for e in ds.iterall() if e.VR == "UI" and e.value
            for v in (e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value])
            if not is_registered(str(v))}


@pytest.fixture(scope="module")
def pacs() -> Iterator[Orthanc]:
    with Orthanc(aet="RESEARCH_PACS") as server:
        yield server


@pytest.fixture(scope="module")
def shared(pacs: Orthanc, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run both nodes, send the study to both at once, wait until both have forwarded all of it."""
    files = one_patients_study()
    url = postgres.create_database("shared_nodes")
    ports = {name: free_port() for name in NODES}
    configs = {name: write_config(tmp_path_factory.mktemp(name), port=ports[name], dest_port=pacs.dicom_port,
                                  database_url=url, workers=2, profile="tcia.yaml", node_name=name,
                                  pixels=False)
               for name in NODES}
    nodes = [NodeProcess(configs[name], ports[name]) for name in NODES]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:  # started together: both migrate the new database
            list(pool.map(NodeProcess.start, nodes))
            list(pool.map(lambda name: storescu(files, ports[name], called_ae="DEID_NODE"), NODES))
        engine = make_engine(url)
        _wait_until_forwarded(engine, len(files) * len(NODES), timeout=240)
    finally:
        for node in nodes:
            node.stop()
    logs = [node.log() for node in nodes]
    store = MappingStore(make_session_factory(engine), KeyedDerivation(SECRET.encode()), OriginalCipher(SECRET.encode()))
    yield {"files": files, "engine": engine, "logs": logs, "store": store}
    engine.dispose()


def _wait_until_forwarded(engine: Engine, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done = connection.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.FORWARDED))
        if done == expected:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{done} of {expected} jobs forwarded after {timeout} s")


def _jobs(engine: Engine) -> dict[str, set[tuple[str, str]]]:
    with engine.connect() as connection:
        rows = connection.execute(select(Job.node, Job.new_sop_instance_uid, Job.patient_pseudonym)).all()
    by_node: dict[str, set[tuple[str, str]]] = {name: set() for name in NODES}
    for node, uid, pseudonym in rows:
        by_node[node].add((uid, pseudonym))
    return by_node


def test_both_nodes_hand_out_the_same_uids_and_pseudonym(shared) -> None:  # type: ignore[no-untyped-def]
    by_node = _jobs(shared["engine"])
    assert len(by_node[NODES[0]]) == len(shared["files"])
    assert by_node[NODES[0]] == by_node[NODES[1]]


def test_the_pacs_holds_each_instance_once_under_the_shared_identity(shared, pacs: Orthanc) -> None:  # type: ignore[no-untyped-def]
    assert pacs.count() == len(shared["files"])  # Orthanc files an instance once per SOPInstanceUID
    stored = {str(pacs.dataset(i).SOPInstanceUID): pacs.dataset(i) for i in pacs.instances()}
    expected = {uid: pseudonym for uid, pseudonym in _jobs(shared["engine"])[NODES[0]]}
    assert set(stored) == set(expected)
    assert {str(ds.PatientID) for ds in stored.values()} == set(expected.values())


def test_exactly_one_mapping_row_per_original(shared) -> None:  # type: ignore[no-untyped-def]
    originals = [pydicom.dcmread(f, stop_before_pixels=True) for f in shared["files"]]
    with shared["engine"].connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Patient)) == 1
        uid_rows = connection.scalar(select(func.count()).select_from(UidMapping))
    recorded = [row.original for row in shared["store"].uid_rows()]
    assert len(recorded) == uid_rows == len(set(recorded))
    assert set(recorded) <= set().union(*(_instance_uids(ds) for ds in originals))
    for ds in originals:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert str(ds[keyword].value) in recorded


def test_dates_are_shifted_by_the_one_stored_offset(shared, pacs: Orthanc) -> None:  # type: ignore[no-untyped-def]
    [patient] = list(shared["store"].patient_rows())
    by_new_uid = {row.original: row.new for row in shared["store"].uid_rows()}
    stored = {str(pacs.dataset(i).SOPInstanceUID): pacs.dataset(i) for i in pacs.instances()}
    checked = 0
    for path in shared["files"]:
        original = pydicom.dcmread(path, stop_before_pixels=True)
        clean = stored[by_new_uid[str(original.SOPInstanceUID)]]
        if original.get("StudyDate"):
            assert (DA(clean.StudyDate) - DA(original.StudyDate)).days == patient.offset_days
            checked += 1
    assert checked


def test_neither_node_logged_a_mapping(shared) -> None:  # type: ignore[no-untyped-def]
    originals = [pydicom.dcmread(f, stop_before_pixels=True) for f in shared["files"]]
    for log in shared["logs"]:
        assert '"event": "forwarded"' in log
        for ds in originals:
            for value in (str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)):
                assert value not in log
