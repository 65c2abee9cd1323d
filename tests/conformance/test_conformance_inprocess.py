"""The MIDI-B style suite run in-process: corpus -> TCIA profile -> output files + mapping CSVs -> score."""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest

from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation
from tests.conformance.generate import AnswerKey, generate_corpus
from tests.conformance.score import Score, score

PROFILE = Path(__file__).resolve().parents[2] / "config" / "profiles" / "tcia.yaml"
REQUIRED = 0.999


def _write_map(path: Path, pairs: dict[str, str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id_old", "id_new"])
        writer.writerows(sorted(pairs.items()))
    return path


def _deidentify(corpus: Path, key: AnswerKey, output: Path) -> DerivedMappings:
    deidentifier = MetadataDeidentifier(load_profile(PROFILE))
    mappings = DerivedMappings(KeyedDerivation(secret=b"conformance-secret"))
    output.mkdir()
    for name in key.files:
        ds = pydicom.dcmread(corpus / name)
        deidentifier.apply(ds, mappings, collect_header_phi(ds))
        ds.save_as(output / name, enforce_file_format=True)
    return mappings


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Score:
    root = tmp_path_factory.mktemp("conformance")
    key = generate_corpus(root / "corpus", seed=0)
    mappings = _deidentify(root / "corpus", key, root / "output")
    uid_csv = _write_map(root / "uid_map.csv", mappings.uids_seen)
    patient_csv = _write_map(root / "patient_map.csv", {k: v.patient_id for k, v in mappings.patients_seen.items()})
    return score(root / "output", uid_csv, patient_csv, key)


def test_the_corpus_exercises_every_midi_b_action(result: Score) -> None:
    assert set(result.per_action) == {
        "text_removed", "text_retained", "tag_retained", "date_shifted", "uid_changed", "uid_consistent", "patid_consistent",
    }
    assert result.total > 1000


def test_tcia_profile_passes_at_least_99_9_percent_of_actions(result: Score) -> None:
    print("\n" + result.table())
    assert result.fraction >= REQUIRED, "\n".join(result.failures[:40])


def test_the_scorer_fails_an_untouched_corpus(tmp_path: Path) -> None:
    key = generate_corpus(tmp_path / "corpus", seed=1)
    identity = {c.value: c.value for c in key.checks if c.action in ("uid_consistent", "uid_changed")}
    identity |= {c.instance: c.instance for c in key.checks}
    uid_csv = _write_map(tmp_path / "uids.csv", identity)
    patient_csv = _write_map(tmp_path / "patients.csv", {c.value: c.value for c in key.checks if c.action == "patid_consistent"})
    untouched = score(tmp_path / "corpus", uid_csv, patient_csv, key)
    assert untouched.per_action["text_removed"][0] == 0
    assert untouched.per_action["uid_changed"][0] == 0
    assert untouched.fraction < 0.5


def test_the_answer_key_round_trips_through_its_files(tmp_path: Path) -> None:
    key = generate_corpus(tmp_path, seed=3)
    assert AnswerKey.read(tmp_path) == key
    with (tmp_path / "answer_key.csv").open(newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == len(key.checks)
    assert all((tmp_path / name).is_file() for name in key.files)
