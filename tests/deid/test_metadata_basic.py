"""The Basic Profile on real files: every row of PS3.15 Table E.1-1 gets its action."""

from __future__ import annotations

import copy
import csv
import json
from datetime import date, timedelta

import pydicom
import pytest
import yaml
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.deid.samples import CONFIG, PROFILES, Deidentify, read_test_file
from node.deid.pseudonyms import DerivedMappings

TABLE = json.loads((CONFIG / "reference" / "ps3.15-table-e.1-1.json").read_text())
# PS3.15 E.1.1: what a combined code means for an attribute of Type 1, 2 or 3.
COMBINED = {
    "X/Z": {1: "Z", 2: "Z", 3: "X"},
    "X/D": {1: "D", 2: "D", 3: "X"},
    "Z/D": {1: "D", 2: "Z", 3: "Z"},
    "X/Z/D": {1: "D", 2: "Z", 3: "X"},
    "X/Z/U*": {1: "U", 2: "Z", 3: "X"},
}
SYNTHETIC = {
    "PN": "TESTPATIENT^ALPHA", "DA": "20240131", "DT": "20240131120000", "TM": "120000",
    "UI": "1.2.826.0.1.3680043.99999.1.2.3", "AS": "045Y", "AE": "TESTAE", "CS": "TESTVALUE",
    "IS": "7", "DS": "7.5", "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 7.0, "FD": 7.0, "SV": 7,
    "UV": 7, "AT": 0x00100010, "UR": "http://example.invalid/x",
}


def _type_of(tag: int, sop_class: str) -> int:
    lines = [line for line in (CONFIG / "iod-attribute-types.csv").read_text().splitlines() if not line.startswith("#")]
    rows = [r for r in csv.DictReader(lines) if int(r["tag"], 16) == tag and sop_class.startswith(r["sop_class_prefix"])]
    rows.sort(key=lambda r: -len(r["sop_class_prefix"]))
    return int(rows[0]["type"]) if rows else 3


def _profile_overrides() -> dict[int, str]:
    rules = yaml.safe_load((PROFILES / "basic.yaml").read_text())["rules"]
    return {pydicom.datadict.tag_for_keyword(r["tag"]): r["action"] for r in rules}


def _synthetic_value(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "TESTPATIENT^NESTED"
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99999.9.9"
        return Sequence([item])
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return b"\x01\x02"
    return SYNTHETIC.get(vr, "TEST VALUE")


def _table_tags() -> list[tuple[int, str]]:
    tags = []
    for row in TABLE:
        digits = (row["id"][:4] + row["id"][4:].replace("xxxx", "3000")).replace("x", "0")
        if row["id"].startswith("gggg"):
            continue
        tags.append((int(digits, 16), row["basicProfile"]))
    return tags


@pytest.fixture(scope="module")
def every_table_attribute() -> tuple[Dataset, Dataset]:
    """CT_small with one synthetic value for every attribute Table E.1-1 names."""
    ds = read_test_file("CT_small.dcm")
    for tag, _ in _table_tags():
        vr = dictionary_VR(tag).split(" or ")[0]
        if tag not in ds:
            ds.add_new(tag, vr, _synthetic_value(vr))
    return ds, copy.deepcopy(ds)


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == b"" or (isinstance(value, (list, Sequence)) and len(value) == 0)


def test_every_table_row_gets_its_basic_profile_action(every_table_attribute, deidentify: Deidentify, mappings: DerivedMappings) -> None:
    original, ds = every_table_attribute
    deidentify(ds)
    overrides = _profile_overrides()
    failures = []
    for tag, code in _table_tags():
        code = overrides.get(tag, code)
        if code in COMBINED:
            code = COMBINED[code][_type_of(tag, str(original.SOPClassUID))]
        before = original[tag]
        after = ds.get(tag)
        if code == "X":
            ok = after is None
        elif code == "Z":
            ok = after is not None and _is_empty(after.value)
        elif code == "K":
            ok = after is not None and after.value == before.value
        elif code == "U":
            ok = after is not None and (
                before.VR == "SQ" or str(after.value) == mappings.uids_seen[str(before.value)]
            )
        else:  # D: a non-empty value, never the original
            ok = after is not None and not _is_empty(after.value) and (
                before.VR == "SQ" or after.value != before.value
            )
        if not ok:
            failures.append(f"{tag:08X} {code} {before.VR}: {before.value!r} -> {after.value if after else None!r}")
    assert not failures, failures


def test_sequences_are_cleaned_at_any_depth(deidentify: Deidentify, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    inner = Dataset()
    inner.PatientName = "TESTPATIENT^DEEP"
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99999.7.7"
    inner.PatientBirthDate = "19700101"
    middle = Dataset()
    middle.ReferencedImageSequence = Sequence([inner])  # X/Z/U*, Type 3 in a CT image: removed
    middle.ContentSequence = Sequence([copy.deepcopy(inner)])  # D: kept, its items cleaned
    ds.ContentSequence = Sequence([middle])
    report = deidentify(ds)
    item = ds.ContentSequence[0]
    assert "ReferencedImageSequence" not in item
    deepest = item.ContentSequence[0]
    assert deepest.PatientName == report.patient.patient_name
    assert deepest.ReferencedSOPInstanceUID == mappings.uids_seen["1.2.826.0.1.3680043.99999.7.7"]
    assert "PatientBirthDate" in deepest and deepest.PatientBirthDate == ""


def test_private_attributes_and_their_creators_are_removed(deidentify: Deidentify) -> None:
    ds = read_test_file("CT_small.dcm")
    assert any(e.tag.is_private for e in ds)
    report = deidentify(ds)
    assert not [e.tag for e in ds if e.tag.is_private]
    assert report.actions["X"] >= 179


def test_uids_are_replaced_consistently_and_file_meta_follows(deidentify: Deidentify, mappings: DerivedMappings) -> None:
    first, second = read_test_file("CT_small.dcm"), read_test_file("CT_small.dcm")
    original_study = first.StudyInstanceUID
    original_sop_class = first.SOPClassUID
    deidentify(first)
    deidentify(second)
    assert first.StudyInstanceUID != original_study
    assert first.StudyInstanceUID == second.StudyInstanceUID == mappings.uids_seen[original_study]
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == original_sop_class
    assert first.file_meta.TransferSyntaxUID == second.file_meta.TransferSyntaxUID


def test_registered_uids_are_never_replaced(deidentify: Deidentify) -> None:
    ds = read_test_file("CT_small.dcm")
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.840.10008.1.4.1.1"  # a well-known frame of reference: registered
    ds.ReferencedImageSequence = Sequence([item])
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.99999.5"
    deidentify(ds)
    assert ds.FrameOfReferenceUID != "1.2.826.0.1.3680043.99999.5"
    assert "ReferencedImageSequence" not in ds or ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.840.10008.1.4.1.1"


def test_patient_identity_comes_from_the_mappings(deidentify: Deidentify, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    original_id = ds.PatientID
    report = deidentify(ds)
    expected = mappings.derivation.patient(original_id)
    assert report.patient == expected
    assert (ds.PatientID, ds.PatientName) == (expected.patient_id, expected.patient_name)


def test_required_dates_get_the_shifted_date_as_dummy(deidentify: Deidentify, mappings: DerivedMappings) -> None:
    ds = read_test_file("test-SR.dcm")  # Content Date is Z/D and Type 1 in SR: D
    original = ds.ContentDate
    report = deidentify(ds)
    shifted = date(int(original[:4]), int(original[4:6]), int(original[6:8])) + timedelta(days=report.patient.date_offset_days)
    assert ds.ContentDate == shifted.strftime("%Y%m%d")
    assert ds.StudyDate == ""  # Z
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_marking_appends_to_what_the_pixel_step_wrote(deidentify: Deidentify) -> None:
    ds = read_test_file("US1_UNCR.dcm")
    pixel_item = Dataset()
    pixel_item.CodeValue, pixel_item.CodingSchemeDesignator, pixel_item.CodeMeaning = "113101", "DCM", "Clean Pixel Data Option"
    ds.DeidentificationMethodCodeSequence = Sequence([pixel_item])
    ds.BurnedInAnnotation = "NO"
    report = deidentify(ds)
    codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113101", "113100"]
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.BurnedInAnnotation == "NO"
    assert "basic" in str(ds.DeidentificationMethod)
    assert report.options == ()


def test_attributes_the_table_does_not_name_follow_the_stated_defaults(deidentify: Deidentify, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds.add_new(0x00209999, "LO", "TESTPATIENT^HIDDEN")  # not in the data dictionary: removed
    ds.TargetFrameOfReferenceUID = "1.2.826.0.1.3680043.99999.3"  # unlisted UID: replaced
    language = Dataset()
    language.CodeValue, language.CodingSchemeDesignator = "en", "RFC5646"
    language.EvaluatorName = "TESTDOCTOR^UNLISTED"  # unlisted PN: removed
    ds.LanguageCodeSequence = Sequence([language])  # unlisted sequence: kept, its items walked
    slice_thickness = ds.SliceThickness  # unlisted, known safe: kept
    deidentify(ds)
    assert 0x00209999 not in ds
    assert ds.TargetFrameOfReferenceUID == mappings.uids_seen["1.2.826.0.1.3680043.99999.3"]
    assert ds.LanguageCodeSequence[0].CodeValue == "en"
    assert "EvaluatorName" not in ds.LanguageCodeSequence[0]
    assert ds.SliceThickness == slice_thickness
