"""Real ultrasound with burned-in PHI (pydicom-data, pydicom test files): every PHI word masked."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless

from tests.deid.pixels.conftest import Clean
from tests.deid.pixels.judge import changed_pixels, decoded, found_tokens, ocr_text, printed_text, shown

# Where the known PHI is printed (x, y, w, h) and what it says, per image family.
US1_PHI = {"institution": ((17, 23, 155, 18), ["BAPTIST", "MED CTR"])}
PHILIPS_PHI = {
    "patient name": ((92, 6, 32, 20), ["OB"]),
    "patient id": ((94, 33, 174, 20), ["11-05-25-142825"]),
    "institution": ((325, 32, 188, 24), ["Philips Healthcare"]),
    "study date": ((667, 5, 108, 22), ["5/25/2011"]),
}


def _read(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("name", "syntax_after"),
    [
        ("US1_UNCR.dcm", ExplicitVRLittleEndian),  # native stays native
        ("US1_J2KR.dcm", RLELossless),  # JPEG 2000 lossless -> RLE lossless
        ("US1_J2KI.dcm", RLELossless),  # lossy input is not compressed lossy again
    ],
)
def test_us1_institution_is_masked_in_every_transfer_syntax(clean: Clean, name: str, syntax_after: str) -> None:
    ds = _read(name)
    before = decoded(ds)
    outcome = clean(ds)
    after = decoded(ds)
    assert outcome.redacted and outcome.boxes >= 1
    assert ds.file_meta.TransferSyntaxUID == syntax_after
    assert ds.PhotometricInterpretation == "RGB"
    for box, _ in US1_PHI.values():
        text = printed_text(ds, before[0], box)
        assert text.sum() > 100
        assert changed_pixels(before, after)[0][text].mean() >= 0.99
    leftover = found_tokens(ocr_text(shown(ds, after[0])), [t for _, ts in US1_PHI.values() for t in ts])
    assert leftover == []


def test_lossy_input_keeps_its_lossy_flag_and_is_reencoded_losslessly(clean: Clean) -> None:
    ds = _read("US1_J2KI.dcm")
    clean(ds)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert ds.get("LossyImageCompression") == "01"


def test_us1_text_that_is_not_phi_stays(clean: Clean) -> None:
    ds = _read("US1_UNCR.dcm")
    before = decoded(ds)
    clean(ds)
    changed = changed_pixels(before, decoded(ds))[0]
    assert not changed[355:380, 240:365].any()  # "LYMPH NODE": words of the vocabulary, read surely
    # Deny by default (issue 14): what is read unsurely goes, the settings line whose "MI=0.8"
    # tesseract reads at confidence 27 and two specks of the image it reads as short words; the
    # image itself stays but for those specks.
    assert changed[110:340, :].mean() <= 0.01


@pytest.mark.parametrize("name", ["OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"])
def test_philips_multiframe_phi_is_masked_on_every_frame(clean: Clean, name: str) -> None:
    ds = _read(name)
    before = decoded(ds)
    outcome = clean(ds)
    after = decoded(ds)
    assert outcome.redacted and outcome.frames_scanned == 2
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    for box, _ in PHILIPS_PHI.values():
        text = printed_text(ds, before[0], box)  # the overlay is the same on both frames
        assert text.sum() > 20
        for frame in range(2):
            image = shown(ds, after[frame])
            assert (image[text] == image.min()).mean() >= 0.99  # black where the text was
    tokens = [t for _, ts in PHILIPS_PHI.values() for t in ts if len(t) > 2]
    assert found_tokens(ocr_text(shown(ds, after[1])), tokens) == []


def test_sonosite_cine_patient_name_is_masked_on_every_frame(clean: Clean) -> None:
    """A real JPEG (YBR_FULL_422) cine loop with the patient's name burned in at the top left."""
    ds = _read("color3d_jpeg_baseline.dcm")
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))[:6]
    ds.PixelData, ds.NumberOfFrames = encapsulate(frames), len(frames)
    before = decoded(ds)
    outcome = clean(ds)
    after = decoded(ds)
    assert outcome.redacted and outcome.frames_scanned == 6
    assert ds.file_meta.TransferSyntaxUID == RLELossless and ds.PhotometricInterpretation == "RGB"
    name_box = (22, 4, 40, 20)  # "PLA", the PatientName
    for frame in range(6):
        text = printed_text(ds, before[frame], name_box)
        assert text.sum() > 50
        image = shown(ds, after[frame])
        assert (image[text] == 0).all()
    assert not changed_pixels(before, after)[:, 100:400, 100:540].any()  # the heart is untouched


@pytest.mark.parametrize(
    ("name", "syntax_after"),
    [("OBXXXX1A_expb_2frame.dcm", ExplicitVRBigEndian), ("gdcm-US-ALOKA-16_big.dcm", ExplicitVRBigEndian),
     ("US1_J2KI.dcm", RLELossless)],
)
def test_masked_instance_is_written_and_read_back_unchanged(clean: Clean, name: str, syntax_after: str) -> None:
    """Pixel attributes, transfer syntax and byte order stay consistent with the data written."""
    ds = _read(name)
    assert clean(ds).redacted
    masked = decoded(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    back = pydicom.dcmread(buffer)
    assert back.file_meta.TransferSyntaxUID == syntax_after
    assert np.array_equal(decoded(back), masked)


def test_marks_clean_pixel_data_and_keeps_earlier_method_codes(clean: Clean) -> None:
    ds = _read("US1_UNCR.dcm")
    earlier = pydicom.Dataset()
    earlier.CodeValue, earlier.CodingSchemeDesignator, earlier.CodeMeaning = "113100", "DCM", "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [earlier]
    clean(ds)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101"]
    assert ds.DeidentificationMethodCodeSequence[1].CodeMeaning == "Clean Pixel Data Option"
    assert ds.BurnedInAnnotation == "NO"
