"""Every option column of Table E.1-1, selected by name in a profile, on real files."""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.deid.metadata import MetadataDeidentifier, MetadataReport
from node.deid.part10 import part10
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings
from tests.deid.samples import profile_variant, read_test_file

OPTION_CODES = {
    "retain_safe_private": "113111", "retain_uids": "113110", "retain_device_identity": "113109",
    "retain_institution_identity": "113112", "retain_patient_characteristics": "113108",
    "retain_longitudinal_full_dates": "113106", "retain_longitudinal_modified_dates": "113107",
    "clean_descriptors": "113105", "clean_structured_content": "113104", "clean_graphics": "113103",
}


def _apply(tmp_path: Path, mappings: DerivedMappings, ds: pydicom.Dataset, *options: str) -> MetadataReport:
    path = profile_variant(tmp_path, {"options: []": f"options: [{', '.join(options)}]"})
    return MetadataDeidentifier(load_profile(path)).apply(ds, mappings, collect_header_phi(ds))


def _days(value: str, offset: int) -> str:
    return (date(int(value[:4]), int(value[4:6]), int(value[6:8])) + timedelta(days=offset)).strftime("%Y%m%d")


@pytest.mark.parametrize("option", sorted(OPTION_CODES))
def test_each_option_is_declared_with_its_cid_7050_code(option: str, tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    report = _apply(tmp_path, mappings, ds, option)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", OPTION_CODES[option]]
    assert report.options == (option,)


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"])
def test_method_codes_read_back_from_the_written_file_in_every_encoding(
    name: str, tmp_path: Path, mappings: DerivedMappings
) -> None:
    """The code sequence is encoded once per encoding and added as bytes: it must read back as
    the same items, with scheme and meaning, whatever the syntax the file is written in."""
    ds = read_test_file(name)
    _apply(tmp_path, mappings, ds, "clean_descriptors")
    written = pydicom.dcmread(io.BytesIO(part10(ds)))
    assert written.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in written.DeidentificationMethodCodeSequence] == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"), ("113105", "DCM", "Clean Descriptors Option")]
    again = pydicom.dcmread(io.BytesIO(part10(written)))  # through a second node: nothing added twice
    _apply(tmp_path, mappings, again, "clean_descriptors")
    assert [i.CodeValue for i in again.DeidentificationMethodCodeSequence] == ["113100", "113105"]


def test_retain_uids_keeps_every_uid(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    original = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID)
    _apply(tmp_path, mappings, ds, "retain_uids")
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID) == original
    assert not mappings.uids_seen


def test_retain_device_identity_keeps_station_and_serial(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds, plain = read_test_file("CT_small.dcm"), read_test_file("CT_small.dcm")
    for d in (ds, plain):
        d.StationName, d.DeviceSerialNumber = "TESTSTATION01", "TESTSERIAL99"
    _apply(tmp_path, mappings, ds, "retain_device_identity")
    _apply(tmp_path, mappings, plain)
    assert (ds.StationName, ds.DeviceSerialNumber) == ("TESTSTATION01", "TESTSERIAL99")
    assert "StationName" not in plain and "DeviceSerialNumber" not in plain


def test_retain_institution_identity_keeps_the_institution(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds.InstitutionName, ds.InstitutionAddress = "Synthetic General Hospital", "1 Example Road"
    _apply(tmp_path, mappings, ds, "retain_institution_identity")
    assert (ds.InstitutionName, ds.InstitutionAddress) == ("Synthetic General Hospital", "1 Example Road")


def test_retain_patient_characteristics_keeps_sex_age_size(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize = "F", "047Y", 61.5, 1.68
    _apply(tmp_path, mappings, ds, "retain_patient_characteristics")
    assert (ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize) == ("F", "047Y", 61.5, 1.68)


def test_retain_full_dates_keeps_dates_unmodified(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    study_date, acquisition = ds.StudyDate, ds.AcquisitionDate
    _apply(tmp_path, mappings, ds, "retain_longitudinal_full_dates")
    assert (ds.StudyDate, ds.AcquisitionDate) == (study_date, acquisition)
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_retain_modified_dates_shifts_da_and_dt_and_keeps_times(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    study_date, study_time = ds.StudyDate, ds.StudyTime
    ds.AcquisitionDateTime = "20240131235959.123456+0100"
    ds.CalibrationDate = ["20240101", "20240229"]
    report = _apply(tmp_path, mappings, ds, "retain_longitudinal_modified_dates")
    offset = report.patient.date_offset_days
    assert ds.StudyDate == _days(study_date, offset)
    assert ds.StudyTime == study_time
    assert ds.AcquisitionDateTime == _days("20240131", offset) + "235959.123456+0100"
    assert list(ds.CalibrationDate) == [_days("20240101", offset), _days("20240229", offset)]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_one_patient_one_offset_across_instances(tmp_path: Path, mappings: DerivedMappings) -> None:
    first, second = read_test_file("CT_small.dcm"), read_test_file("CT_small.dcm")
    second.StudyDate = "20010203"
    a = _apply(tmp_path, mappings, first, "retain_longitudinal_modified_dates")
    b = _apply(tmp_path, mappings, second, "retain_longitudinal_modified_dates")
    assert a.patient == b.patient
    assert second.StudyDate == _days("20010203", a.patient.date_offset_days)


def test_clean_descriptors_removes_phi_and_keeps_clinical_words(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    ds.PatientName = "TESTPATIENT^ALPHA"
    ds.StudyDate = "20240131"
    ds.StudyDescription = "MRI BRAIN W/WO for Alpha Testpatient 01/31/2024"
    ds.SeriesDescription = "T2 FLAIR AXIAL by Dr. Testdoctor call 555-010-1234"
    _apply(tmp_path, mappings, ds, "clean_descriptors")
    assert ds.StudyDescription == "MRI BRAIN W/WO"
    assert ds.SeriesDescription.startswith("T2 FLAIR AXIAL")
    assert "Testdoctor" not in ds.SeriesDescription and "555" not in ds.SeriesDescription


def test_clean_structured_content_keeps_context_and_cleans_its_text(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    ds.PatientName = "TESTPATIENT^ALPHA"
    item = Dataset()
    item.TextValue = "ALPHA TESTPATIENT reports headache"
    item.PersonName = "TESTPATIENT^ALPHA"
    ds.AcquisitionContextSequence = Sequence([item])
    _apply(tmp_path, mappings, ds, "clean_structured_content")
    kept = ds.AcquisitionContextSequence[0]
    assert "TESTPATIENT" not in str(kept.PersonName)
    assert kept.TextValue == "reports headache"


def test_retain_safe_private_keeps_listed_elements_by_creator_not_tag(tmp_path: Path, mappings: DerivedMappings) -> None:
    ds = read_test_file("MR_small.dcm")
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x23, "DS", "12.5")  # k in TCIA's KB
    ds.private_block(0x0021, "SYNTHETIC VENDOR", create=True).add_new(0x23, "DS", "12.5")  # unknown creator
    impostor = ds.private_block(0x0019, "SYNTHETIC VENDOR", create=True)  # same group and byte, other creator
    impostor.add_new(0x23, "LO", "TESTPATIENT^ALPHA")
    uid_block = ds.private_block(0x0029, "SIEMENS SYNGO ADVANCED PRESENTATION", create=True)
    uid_block.add_new(0x09, "UI", "1.2.826.0.1.3680043.99999.42")  # h in TCIA's KB
    _apply(tmp_path, mappings, ds, "retain_safe_private")
    assert ds.get_private_item(0x0019, 0x23, "GEMS_ACQU_01").value == "12.5"
    with pytest.raises(KeyError):
        ds.private_block(0x0019, "SYNTHETIC VENDOR")
    with pytest.raises(KeyError):
        ds.private_block(0x0021, "SYNTHETIC VENDOR")
    assert ds.get_private_item(0x0029, 0x09, "SIEMENS SYNGO ADVANCED PRESENTATION").value == mappings.uids_seen["1.2.826.0.1.3680043.99999.42"]


def test_conflicting_date_options_are_refused(tmp_path: Path) -> None:
    from node.deid.profile import ProfileError

    path = profile_variant(tmp_path, {"options: []": "options: [retain_longitudinal_full_dates, retain_longitudinal_modified_dates]"})
    with pytest.raises(ProfileError, match="cannot be combined"):
        load_profile(path)
