"""Tesseract calls per instance set the pixel step's price (~0.15 s each before reading a word):
one for the regions an image's detector found, whole frames included for action "ocr", and one
more after masking only where masks changed what the detector sees, or the policy asks for whole
masked frames."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pydicom
import pytest

from node.deid.pixels import PixelCleaner, ocr
from tests.deid.pixels.conftest import Clean
from tests.deid.pixels.synthetic import Font, Kind, image_dataset, text_mask


@pytest.fixture
def sheets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The shape of every sheet tesseract is called on."""
    seen: list[tuple[int, int]] = []
    call = ocr._tesseract

    def counted(sheet: np.ndarray, config: str, timeout: float) -> dict:
        seen.append(sheet.shape)
        return call(sheet, config, timeout)

    monkeypatch.setattr(ocr, "_tesseract", counted)
    yield seen


def test_an_image_with_phi_is_read_in_one_call(clean: Clean, sheets: list[tuple[int, int]]) -> None:
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 8))
    outcome = clean(image_dataset(Kind("MONOCHROME2", 12), "CT", mask, frames=2))
    assert outcome.redacted
    assert len(sheets) == 1  # both frames' text, which is the same, read once; masks leave nothing new


def test_an_image_without_text_costs_no_call(clean: Clean, sheets: list[tuple[int, int]]) -> None:
    outcome = clean(image_dataset(Kind("MONOCHROME2", 12), "CT", np.zeros((256, 256), bool)))
    assert not outcome.redacted and sheets == []


def test_text_too_small_to_read_is_masked_without_a_call(clean: Clean, sheets: list[tuple[int, int]]) -> None:
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 6))
    outcome = clean(image_dataset(Kind("MONOCHROME2", 12), "MR", mask))
    assert (outcome.redacted, outcome.reason, outcome.ocr_frames) == (True, "unreadable text", 0)
    assert sheets == []


def test_action_ocr_reads_whole_frames_with_the_regions_and_verifies_a_whole_frame(
    clean: Clean, sheets: list[tuple[int, int]]
) -> None:
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 8))
    outcome = clean(image_dataset(Kind("MONOCHROME2", 12), "CT", mask, burned_in="YES"))
    assert outcome.redacted
    # One tesseract sheet: the regions. The whole frame is read by PP-OCR, the masked frame (the
    # second look) by tesseract in-process: neither through the sheet.
    assert len(sheets) == 1 and outcome.ocr_frames == 1


def test_text_an_earlier_instance_showed_is_not_read_again(
    clean: Clean, cleaner: PixelCleaner, sheets: list[tuple[int, int]]
) -> None:
    """A study repeats its banner on every instance: read once per worker, not once per instance.
    The words are remembered, not the verdict: each instance is matched against its own header."""
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 8))
    first, second = (image_dataset(Kind("MONOCHROME2", 12), "CT", mask) for _ in range(2))
    found = clean(first)
    calls = len(sheets)
    assert found.redacted and calls >= 1
    outcome = clean(second)
    assert outcome.redacted and outcome.ocr_frames == 0 and len(sheets) == calls
    assert second.PixelData == first.PixelData  # masked exactly as the first

    def other_patient() -> pydicom.Dataset:  # the same pixels under another header
        ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
        ds.PatientName, ds.PatientID = "OTHER^SYNTHETIC", "SYN-OTHER-0001"
        return ds

    remembered, afresh = other_patient(), other_patient()
    from_memory = clean(remembered)
    assert len(sheets) == calls
    cleaner.forget_readings()
    read_again = clean(afresh)
    assert len(sheets) == calls + 1
    assert remembered.PixelData == afresh.PixelData and from_memory.boxes == read_again.boxes
    # Deny by default: the lines go whatever the header says (they were not known to be safe).
    assert from_memory.boxes == found.boxes
