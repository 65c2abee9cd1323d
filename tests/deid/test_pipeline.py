"""The whole de-identification step on real images without burned-in text: the header is
rewritten, the pixels and the transfer syntax are not (MIDI-B's pixels_retained)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from node.deid.metadata import MetadataDeidentifier
from node.deid.pipeline import Deidentifier
from node.deid.pixels import PixelCleaner
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deidentifier() -> Deidentifier:
    return Deidentifier(MetadataDeidentifier(load_profile(REPO / "config" / "profiles" / "tcia.yaml")),
                        PixelCleaner.from_policy_file(REPO / "config" / "pixel-policy.yaml"))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
                                  "emri_small_jpeg_ls_lossless.dcm"])
def test_images_without_text_keep_pixel_bytes_and_transfer_syntax(deidentifier: Deidentifier, name: str) -> None:
    path = Path(get_testdata_file(name))
    original = pydicom.dcmread(path)
    outcome = deidentifier.run_file(path, DerivedMappings(KeyedDerivation(b"pipeline-test")))
    clean = pydicom.dcmread(io.BytesIO(outcome.data))
    assert clean.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert hashlib.md5(clean.PixelData).digest() == hashlib.md5(original.PixelData).digest()
    assert clean.SOPInstanceUID != original.SOPInstanceUID
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID
    assert clean.PatientIdentityRemoved == "YES"


def test_a_file_that_says_explicit_vr_but_holds_implicit_vr_is_written_in_explicit_vr(
    deidentifier: Deidentifier,
) -> None:
    """SC_rgb_jpeg.dcm declares Explicit VR (JPEG Baseline) but its elements are encoded in
    implicit VR; pydicom reads it, but cannot write it back (no VR to write), and the instance
    used to be quarantined. Now every element gets its dictionary VR and the file is written in
    the syntax it declares, pixels untouched."""
    path = Path(get_testdata_file("SC_rgb_jpeg.dcm"))
    original = pydicom.dcmread(path)
    assert original.get_item(0x00080016).VR is None  # read without a VR: the case this is about
    with pytest.raises(TypeError):
        original.save_as(io.BytesIO(), enforce_file_format=True)
    outcome = deidentifier.run_file(path, DerivedMappings(KeyedDerivation(b"pipeline-test")))
    clean = pydicom.dcmread(io.BytesIO(outcome.data))
    assert clean.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert all(clean.get_item(tag).VR == clean[tag].VR for tag in clean.keys())  # read back with VRs as written
    assert clean.SOPClassUID == original.SOPClassUID and clean.SOPInstanceUID != original.SOPInstanceUID
    assert clean.PixelData == original.PixelData
