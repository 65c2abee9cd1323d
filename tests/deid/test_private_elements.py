"""Private elements under the safe list, as read from files: kept ones are copied through as read,
never converted, and implicit VR or UN elements get the VR that pydicom or the safe list knows."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi
from node.deid.part10 import part10
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings
from tests.deid.samples import PROFILES, read_test_file

CTP_PROJECT, CTP_SITE = 0x00131010, 0x00131012  # (0013,xx10/12) LO k under creator "CTP", unknown to pydicom
GEMS_CELL_NUMBER = 0x00191003  # (0019,xx03) k under GEMS_ACQU_01, DS in pydicom's private dictionary
MMC_SEQUENCE = 0x00291132  # (0029,xx32) SQ k under MMCPRIVATE, in block 11


@pytest.fixture(scope="module")
def deidentifier() -> MetadataDeidentifier:
    return MetadataDeidentifier(load_profile(PROFILES / "tcia.yaml"))


def _as_read(ds: Dataset, *, implicit: bool) -> pydicom.Dataset:
    """`ds` written in explicit or implicit VR and read back, its elements raw as in any file."""
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _with_ctp_block(ds: Dataset, vr: str, project: bytes) -> Dataset:
    ds[0x00130010] = DataElement(0x00130010, "LO", "CTP")
    ds[CTP_PROJECT] = DataElement(CTP_PROJECT, vr, project)
    ds[CTP_SITE] = DataElement(CTP_SITE, "LO", "SITE 7")
    return ds


def test_kept_private_elements_stay_as_read_and_are_written_as_read(deidentifier: MetadataDeidentifier,
                                                                      mappings: DerivedMappings) -> None:
    ds = _as_read(read_test_file("CT_small.dcm"), implicit=False)
    read = {tag: ds.get_item(tag).value for tag in ds.keys() if tag >> 16 & 1}
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    kept = [tag for tag in ds.keys() if tag >> 16 & 1]
    assert len(kept) > 100  # GE's acquisition, image and reconstruction parameters
    assert all(isinstance(ds.get_item(tag), RawDataElement) for tag in kept)  # creators included
    written = pydicom.dcmread(io.BytesIO(part10(ds)))
    assert {tag: written.get_item(tag).value for tag in kept} == {tag: read[tag] for tag in kept}


def test_implicit_vr_elements_get_the_safe_lists_vr_where_pydicom_knows_none(deidentifier: MetadataDeidentifier,
                                                                              mappings: DerivedMappings) -> None:
    ds = _as_read(_with_ctp_block(read_test_file("CT_small.dcm"), "LO", b"PROJ\\ONE\x00"), implicit=True)
    assert ds[CTP_PROJECT].VR == "UN"
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    assert (ds[CTP_PROJECT].VR, list(ds[CTP_PROJECT].value)) == ("LO", ["PROJ", "ONE"])
    assert (ds[CTP_SITE].VR, ds[CTP_SITE].value) == ("LO", "SITE 7")
    assert ds.get_item(GEMS_CELL_NUMBER).VR is None  # pydicom's dictionary knows it: kept as read
    assert ds[GEMS_CELL_NUMBER].VR == "DS"


def test_explicit_un_elements_are_written_with_the_vr_pydicom_or_the_safe_list_knows(
        deidentifier: MetadataDeidentifier, mappings: DerivedMappings) -> None:
    ds = _with_ctp_block(read_test_file("CT_small.dcm"), "UN", b"PROJ1 ")
    ds[GEMS_CELL_NUMBER] = DataElement(GEMS_CELL_NUMBER, "UN", ds.get_item(GEMS_CELL_NUMBER).value)
    ds = _as_read(ds, implicit=False)
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    written = pydicom.dcmread(io.BytesIO(part10(ds)))
    assert (written[CTP_PROJECT].VR, written[CTP_PROJECT].value) == ("LO", "PROJ1")
    assert (written.get_item(GEMS_CELL_NUMBER).VR, written[GEMS_CELL_NUMBER].value) == ("DS", "373.750000")


def test_kept_private_sequences_are_cleaned_inside(deidentifier: MetadataDeidentifier, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    item = Dataset()
    item.PatientName = "TESTPATIENT^ALPHA"
    ds[0x00290011] = DataElement(0x00290011, "LO", "MMCPRIVATE")
    ds[MMC_SEQUENCE] = DataElement(MMC_SEQUENCE, "SQ", Sequence([item]))
    ds = _as_read(ds, implicit=False)
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    assert b"TESTPATIENT" not in part10(ds)
    assert "TESTPATIENT" not in str(ds[MMC_SEQUENCE].value[0].get("PatientName", ""))


def test_creators_are_matched_whatever_their_padding(deidentifier: MetadataDeidentifier, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds[0x00130010] = DataElement(0x00130010, "LO", "CTP\x00")
    ds[CTP_SITE] = DataElement(CTP_SITE, "LO", "SITE 7")
    ds = _as_read(ds, implicit=False)
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    assert ds[CTP_SITE].value == "SITE 7"


@pytest.mark.parametrize("defined_length", [True, False])
def test_kept_private_sequences_unknown_to_pydicom_are_cleaned_inside_in_implicit_vr(
        deidentifier: MetadataDeidentifier, mappings: DerivedMappings, defined_length: bool) -> None:
    """Tried: an implicit VR file with a private sequence the safe list keeps but pydicom's private
    dictionary does not know (read as opaque UN bytes); a name in its item must not get through."""
    ds = read_test_file("CT_small.dcm")
    item = Dataset()
    item.PatientName = "TESTPATIENT^ALPHA"
    item.PatientID = "TEST-ID-0042"
    ds[0x00290011] = DataElement(0x00290011, "LO", "MMCPRIVATE")
    ds[MMC_SEQUENCE] = DataElement(MMC_SEQUENCE, "SQ", Sequence([item]), is_undefined_length=not defined_length)
    ds = _as_read(ds, implicit=True)
    deidentifier.apply(ds, mappings, collect_header_phi(ds))
    written = part10(ds)
    assert b"TESTPATIENT" not in written and b"TEST-ID-0042" not in written
