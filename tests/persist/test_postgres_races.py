"""Several OS processes race on one database, PostgreSQL (the store nodes share) and SQLite (the
embedded default): nodes starting together all migrate it, get-or-create leaves one row per
original and every racer the same answers, and every job is claimed exactly once.

The racers are real interpreters started once per database. They go through three rounds; in
each, all of them are released together after each has said it is ready, so each race is as
tight as the machine allows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from node.persist.db import check, make_engine, make_session_factory
from node.persist.models import Patient, UidMapping
from node.queue.store import JobStore
from tests.corpus import is_registered
from tests.nodeproc import REPO, SECRET
from tests.servers import unavailable

RACERS = 4
JOBS = 120
FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm", "rtplan.dcm",
         "rtdose.dcm", "waveform_ecg.dcm", "JPEG2000.dcm", "US1_UNCR.dcm")

# One racer. Before each round it says "ready" and waits for "go"; after it, it prints one JSON line.
_RACER = r"""
import json, random, sys
from node.deid.pseudonyms import KeyedDerivation
from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.mappings import MappingStore, OriginalCipher, RecordingMappings
from node.persist.models import JobState
from node.queue.store import JobStore

url, secret, seed = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
work = json.loads(sys.stdin.readline())
rng = random.Random(seed)


def round_(result):
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(result()), flush=True)


# Round 1, like nodes started together on a new database: every one migrates it.
round_(lambda: upgrade(url) or "at head")
sessions = make_session_factory(make_engine(url))


def mappings():
    # Like a worker: per instance a fresh store (no cache), the patient first, then its UIDs.
    answers = {"patients": {}, "uids": {}}
    for _ in range(work["rounds"]):
        for patient_id, uids in rng.sample(work["instances"], len(work["instances"])):
            recording = RecordingMappings(MappingStore(sessions, KeyedDerivation(secret), OriginalCipher(secret)))
            pseudonym = recording.patient(patient_id)
            answers["patients"][patient_id] = [pseudonym.patient_id, pseudonym.date_offset_days]
            for uid in rng.sample(uids, len(uids)):
                answers["uids"][uid] = recording.uid(uid)
            recording.commit()
    return answers


def claims():
    jobs, taken = JobStore(sessions, work["node"]), []
    while claimed := jobs.claim(JobState.PROCESSING, f"racer:{seed}", 60, limit=rng.randint(1, 3)):
        taken += [job.id for job in claimed]
    return taken


round_(mappings)
round_(claims)
"""


class Racers:
    """The racer processes of one database, driven round by round."""

    def __init__(self, url: str, work: dict[str, Any], count: int = RACERS) -> None:
        self.url = url
        self._errors: list[IO[str]] = []
        self.processes = []
        for seed in range(count):
            self._errors.append(err := tempfile.TemporaryFile("w+"))
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", _RACER, url, SECRET, str(seed)], cwd=REPO, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err))
        self._send(json.dumps(work))

    def _send(self, line: str) -> None:
        for process in self.processes:
            process.stdin.write(line + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]

    def round(self) -> list[Any]:
        """Once every racer is ready, release them all at once; the JSON answer of each."""
        assert self._lines() == ["ready"] * len(self.processes)
        self._send("go")
        return [json.loads(line) for line in self._lines()]

    def _lines(self) -> list[str]:
        lines = []
        for process, err in zip(self.processes, self._errors):
            line = process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                process.wait(60)
                err.seek(0)
                raise AssertionError(f"racer exited with {process.returncode}:\n{err.read()[-3000:]}")
            lines.append(line.strip())
        return lines

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for err in self._errors:
            err.close()


def _instances(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(PatientID, every instance-specific UID) of real files, as the metadata step meets them."""
    found = []
    for name in names:
        ds = pydicom.dcmread(get_testdata_file(name))
        uids = {str(v) for e in ds.iterall() if e.VR == "UI" and e.value
                for v in (e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value])}
        found.append((str(ds.get("PatientID", "")), sorted(u for u in uids if not is_registered(u))))
    return found


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def raced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the three rounds on a new, empty database; what each racer answered in each."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('race') / 'race.db'}"
    else:
        if reason := unavailable("postgres"):
            pytest.skip(reason)
        url = str(request.getfixturevalue("postgres").create_database(f"race_{uuid.uuid4().hex[:16]}"))
    instances = _instances(FILES)
    racers = Racers(url, {"instances": instances, "rounds": 2, "node": "race-node"})
    engine = make_engine(url)
    try:
        upgraded = racers.round()
        jobs = JobStore(make_session_factory(engine), "race-node")
        job_ids = [jobs.enqueue(spool_file=f"{i}.dcm", calling_ae="MODALITY", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                                sop_instance_hash=f"{i:064x}", size_bytes=1) for i in range(JOBS)]
        mapped = racers.round()
        claimed = racers.round()
        with engine.connect() as connection:
            rows = {model: connection.scalar(select(func.count()).select_from(model)) for model in (Patient, UidMapping)}
        yield {"url": url, "instances": instances, "upgraded": upgraded, "mapped": mapped, "job_ids": job_ids,
               "claimed": claimed, "rows": rows}
    finally:
        racers.close()
        engine.dispose()


def test_nodes_starting_together_all_find_the_schema_at_head(raced: dict[str, Any]) -> None:
    assert raced["upgraded"] == ["at head"] * RACERS
    check(raced["url"])


def test_racing_workers_get_one_row_per_original_and_the_same_answers(raced: dict[str, Any]) -> None:
    answers = raced["mapped"]
    assert all(a == answers[0] for a in answers[1:])
    patients = {patient for patient, _ in raced["instances"]}
    uids = {uid for _, instance_uids in raced["instances"] for uid in instance_uids}
    assert set(answers[0]["patients"]) == patients and set(answers[0]["uids"]) == uids
    assert raced["rows"] == {Patient: len(patients), UidMapping: len(uids)}


def test_racing_claimers_take_every_job_exactly_once(raced: dict[str, Any]) -> None:
    claimed = Counter(job for racer in raced["claimed"] for job in racer)
    assert sorted(claimed) == sorted(raced["job_ids"])
    assert set(claimed.values()) == {1}
    assert sum(1 for racer in raced["claimed"] if racer) > 1  # the work was really shared, not drained by one
