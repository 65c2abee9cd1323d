"""The mapping store on SQLite and on PostgreSQL: what real instances leave behind, how it is read
back (lookup, per patient, per study), how a patient map is imported, and a wrong secret."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import KeyedDerivation
from node.persist.db import make_engine, make_session_factory, upgrade
from node.persist.exports import export
from node.persist.imports import ImportRejected, import_patient_map, read_patient_map
from node.persist.mappings import (
    MappingError,
    MappingStore,
    OriginalCipher,
    RecordingMappings,
    Scope,
    UnknownMapping,
    WrongSecret,
)
from node.persist.models import Patient, UidMapping
from tests.nodeproc import REPO, SECRET
from tests.servers import unavailable

CT = "CT_small.dcm"
MR = "MR_small.dcm"
# Two instances of one study of one patient ("ID1"), as a modality would send them.
STUDY = ("SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database at head: a SQLite file, or a fresh database on the suite's PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mappings.db'}"
    else:
        if reason := unavailable("postgres"):
            pytest.skip(reason)
        url = request.getfixturevalue("postgres").create_database(f"t_{uuid.uuid4().hex[:16]}")
    upgrade(url)
    return url


@pytest.fixture
def open_store(database_url: str) -> Iterator:  # type: ignore[type-arg]
    """Opens MappingStores on the test's database, each with the secret it is given."""
    engines = []

    def make(secret: str = SECRET, url: str = database_url) -> MappingStore:
        engines.append(engine := make_engine(url))
        return MappingStore(make_session_factory(engine), KeyedDerivation(secret.encode()),
                            OriginalCipher(secret.encode()))

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store(open_store) -> MappingStore:  # type: ignore[no-untyped-def]
    return open_store()


@dataclass(frozen=True)
class Seen:
    original: pydicom.Dataset
    clean: pydicom.Dataset


_METADATA = MetadataDeidentifier(load_profile(REPO / "config" / "profiles" / "tcia.yaml"))


def deidentify(store: MappingStore, name: str) -> Seen:
    """One real instance through the metadata step, its mappings recorded as the worker does."""
    original = pydicom.dcmread(get_testdata_file(name))
    clean = pydicom.dcmread(get_testdata_file(name))
    mappings = RecordingMappings(store)
    _METADATA.apply(clean, mappings, collect_header_phi(clean))
    mappings.commit(study_uid=str(clean.StudyInstanceUID))
    return Seen(original, clean)


def _count(store: MappingStore, model: type) -> int:
    with store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _csv(store: MappingStore, kind: str, scope: Scope = Scope()) -> list[list[str]]:
    out = io.StringIO()
    export(store, kind, scope, out)
    return [line.split(",") for line in out.getvalue().splitlines()[1:]]


def _map(text: str):  # type: ignore[no-untyped-def]
    return read_patient_map(io.StringIO(text))


def test_a_real_instance_leaves_its_patient_and_every_new_uid_recorded(store: MappingStore) -> None:
    seen = deidentify(store, CT)
    [patient] = _csv(store, "offsets")
    assert patient[:2] == [str(seen.original.PatientID), str(seen.clean.PatientID)]
    uids = dict(_csv(store, "uids"))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert uids[str(seen.original[keyword].value)] == str(seen.clean[keyword].value)
    assert _count(store, UidMapping) == len(uids)


def test_originals_are_stored_only_encrypted(store: MappingStore) -> None:
    seen = deidentify(store, CT)
    with store.sessions() as session:
        stored = [*session.execute(select(Patient.original_hash, Patient.original_encrypted)).all(),
                  *session.execute(select(UidMapping.original_hash, UidMapping.original_encrypted)).all()]
    blob = b"".join(bytes(h.encode()) + bytes(e) for h, e in stored)
    for value in (seen.original.PatientID, seen.original.StudyInstanceUID, seen.original.SOPInstanceUID):
        assert str(value).encode() not in blob


def test_the_same_instance_twice_adds_no_row_and_gets_the_same_answers(store: MappingStore,
                                                                       open_store) -> None:  # type: ignore[no-untyped-def]
    first = deidentify(store, MR)
    rows = (_count(store, Patient), _count(store, UidMapping))
    again = deidentify(open_store(), MR)  # another process of another node: no shared cache
    assert (_count(store, Patient), _count(store, UidMapping)) == rows
    assert again.clean.PatientID == first.clean.PatientID
    assert again.clean.StudyDate == first.clean.StudyDate
    assert again.clean.SOPInstanceUID == first.clean.SOPInstanceUID


def test_lookup_answers_from_either_side_for_patients_and_uids(store: MappingStore) -> None:
    seen = deidentify(store, CT)
    by_pseudonym = store.lookup(str(seen.clean.PatientID))
    by_original = store.lookup(str(seen.original.PatientID))
    assert by_pseudonym == by_original
    [patient] = by_original
    assert (patient.kind, patient.original, patient.new) == ("patient", seen.original.PatientID, seen.clean.PatientID)
    [uid] = store.lookup(str(seen.clean.SOPInstanceUID))
    assert (uid.kind, uid.original) == ("uid", seen.original.SOPInstanceUID)
    assert store.lookup(str(seen.original.SOPInstanceUID)) == [uid]
    assert store.lookup("DOE^JANE") == []


def test_export_of_one_patient_holds_only_that_patient_and_its_uids(store: MappingStore) -> None:
    ct, mr = deidentify(store, CT), deidentify(store, MR)
    scope = store.scope(patient=str(ct.clean.PatientID))
    assert _csv(store, "patients", scope) == [[str(ct.original.PatientID), str(ct.clean.PatientID)]]
    exported = dict(_csv(store, "uids", scope))
    assert exported[str(ct.original.SOPInstanceUID)] == str(ct.clean.SOPInstanceUID)
    assert str(mr.original.SOPInstanceUID) not in exported


@pytest.mark.parametrize("side", ["original", "clean"])
def test_export_of_one_study_holds_every_instance_of_it_and_nothing_else(store: MappingStore, side: str) -> None:
    instances = [deidentify(store, name) for name in STUDY]
    other = deidentify(store, CT)
    scope = store.scope(study=str(getattr(instances[0], side).StudyInstanceUID))
    exported = dict(_csv(store, "uids", scope))
    for seen in instances:
        assert exported[str(seen.original.SOPInstanceUID)] == str(seen.clean.SOPInstanceUID)
    assert str(other.original.SOPInstanceUID) not in exported
    assert _csv(store, "patients", scope) == [[str(instances[0].original.PatientID),
                                               str(instances[0].clean.PatientID)]]


def test_unknown_pseudonym_or_study_is_an_error_not_an_empty_export(store: MappingStore) -> None:
    seen = deidentify(store, CT)
    with pytest.raises(UnknownMapping):
        store.scope(patient="ANON-NOSUCHPATIENT")
    with pytest.raises(UnknownMapping):
        store.scope(study=str(seen.clean.SOPInstanceUID))  # a UID it knows, but not a study
    with pytest.raises(MappingError):
        store.scope(patient=str(seen.clean.PatientID), study=str(seen.clean.StudyInstanceUID))


def test_another_secret_is_refused_before_it_reads_or_writes(store: MappingStore, open_store) -> None:  # type: ignore[no-untyped-def]
    seen = deidentify(store, CT)
    intruder = open_store("another-secret-not-for-production")
    with pytest.raises(WrongSecret):
        intruder.verify_secret()
    with pytest.raises(WrongSecret):
        intruder.lookup(str(seen.clean.PatientID))
    with pytest.raises(WrongSecret):
        import_patient_map(intruder, _map("id_old,id_new\nTESTPATIENT^ALPHA,RESEARCH-0001\n"))
    assert _count(store, Patient) == 1


def test_an_empty_database_takes_any_secret(open_store) -> None:  # type: ignore[no-untyped-def]
    open_store("any-secret-at-all").verify_secret()


def test_imported_pseudonym_and_offset_replace_the_derived_ones(store: MappingStore) -> None:
    original = pydicom.dcmread(get_testdata_file(CT))
    result = import_patient_map(store, _map(f"id_old,id_new,offset_days\n{original.PatientID},RESEARCH-0001,-7\n"))
    assert (result.imported, result.already_present) == (1, 0)
    seen = deidentify(store, CT)
    assert seen.clean.PatientID == "RESEARCH-0001"
    shifted = pydicom.valuerep.DA(seen.clean.StudyDate)
    assert (shifted - pydicom.valuerep.DA(original.StudyDate)).days == -7
    with store.sessions() as session:
        assert session.scalar(select(Patient.source)) == "imported"


def test_a_missing_offset_is_derived_like_any_other(store: MappingStore) -> None:
    import_patient_map(store, _map("id_old,id_new,offset_days\nTESTPATIENT^ALPHA,RESEARCH-0001,\n"))
    [row] = store.patient_rows()
    assert row.offset_days == store.derivation.date_offset_days("TESTPATIENT^ALPHA")


def test_importing_the_same_map_twice_changes_nothing(store: MappingStore) -> None:
    text = "id_old,id_new\nTESTPATIENT^ALPHA,RESEARCH-0001\nTESTPATIENT^BETA,RESEARCH-0002\n"
    import_patient_map(store, _map(text))
    again = import_patient_map(store, _map(text))
    assert (again.imported, again.already_present) == (0, 2)
    assert _count(store, Patient) == 2


def test_a_bad_map_names_every_problem_by_line_and_imports_nothing(store: MappingStore) -> None:
    seen = deidentify(store, CT)
    text = (
        "id_old,id_new,offset_days\n"
        "TESTPATIENT^ALPHA,RESEARCH-0001,-10\n"          # 2: fine on its own
        f"TESTPATIENT^BETA,{seen.clean.PatientID},\n"     # 3: pseudonym of a stored patient
        f"{seen.original.PatientID},RESEARCH-0003,\n"     # 4: stored patient, other pseudonym
        "TESTPATIENT^GAMMA,,\n"                           # 5: empty id_new
        "TESTPATIENT^DELTA,RESEARCH-0005,soon\n"          # 6: offset not a number
        "TESTPATIENT^ALPHA,RESEARCH-0006,\n"              # 7: id_old repeats line 2
        "TESTPATIENT^EPSILON,RESEARCH-0001,\n"            # 8: id_new repeats line 2
        "TESTPATIENT^ZETA,RESEARCH-0008\n"                # 9: a field short
        "TESTPATIENT^ETA,RESEARCH\\0009,\n"               # 10: backslash
    )
    with pytest.raises(ImportRejected) as rejected:
        import_patient_map(store, _map(text))
    assert [p.line for p in rejected.value.problems] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert str(seen.original.PatientID) not in "\n".join(map(str, rejected.value.problems))
    assert _count(store, Patient) == 1


@pytest.mark.parametrize("text", ["", "old,new\nA,B\n", "id_old,id_new,id_new\nA,B,C\n", 'id_old,id_new\n"A,B\n'])
def test_a_file_that_is_not_a_patient_map_is_rejected_whole(store: MappingStore, text: str) -> None:
    with pytest.raises(ImportRejected):
        import_patient_map(store, _map(text))
    assert _count(store, Patient) == 0


def test_a_derived_pseudonym_already_imported_for_someone_else_is_an_error(store: MappingStore) -> None:
    taken = store.derivation.patient_id("TESTPATIENT^BETA")
    import_patient_map(store, _map(f"id_old,id_new\nTESTPATIENT^ALPHA,{taken}\n"))
    with pytest.raises(MappingError):
        store.patient("TESTPATIENT^BETA")
    assert _count(store, Patient) == 1


@pytest.mark.parametrize("kind", ["patients", "offsets"])
def test_export_wipe_import_gives_the_same_pseudonyms(store: MappingStore, open_store, kind: str,
                                                      database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Even under a new secret (key rotation): the imported map, not the derivation, decides."""
    before = [deidentify(store, name) for name in (CT, MR, *STUDY)]
    exported = io.StringIO()
    export(store, kind, Scope(), exported)
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(fresh_url)
    fresh = open_store("rotated-secret-not-for-production", fresh_url)
    result = import_patient_map(fresh, read_patient_map(io.StringIO(exported.getvalue())))
    assert result.imported == len({str(s.original.PatientID) for s in before})
    after = [deidentify(fresh, name) for name in (CT, MR, *STUDY)]
    assert [s.clean.PatientID for s in after] == [s.clean.PatientID for s in before]
    if kind == "offsets":
        assert all(s.clean.StudyDate for s in before)
        assert [s.clean.StudyDate for s in after] == [s.clean.StudyDate for s in before]



def test_two_projects_give_one_patient_unrelated_pseudonyms_uids_and_offsets(store: MappingStore) -> None:
    """Project `default` keeps the node's keys (mappings made before projects stay valid); any
    other project derives from its own key and sees only its own rows."""
    secret = SECRET.encode()
    derivation = KeyedDerivation(secret)
    assert derivation.for_project("default") is derivation
    other = MappingStore(store.sessions, derivation.for_project("beta"), OriginalCipher(secret), "beta")
    here, there = deidentify(store, CT), deidentify(other, CT)
    assert here.clean.PatientID == derivation.patient_id(str(here.original.PatientID))  # today's value
    assert here.clean.PatientID != there.clean.PatientID
    assert here.clean.SOPInstanceUID != there.clean.SOPInstanceUID
    assert here.clean.StudyDate != there.clean.StudyDate
    assert [row[1] for row in _csv(store, "patients")] == [here.clean.PatientID]
    assert [row[1] for row in _csv(other, "patients")] == [there.clean.PatientID]
    assert [f.new for f in other.lookup(str(here.original.PatientID)) if f.kind == "patient"] == [there.clean.PatientID]
    assert not other.lookup(here.clean.PatientID)  # another project's pseudonym is not found here
