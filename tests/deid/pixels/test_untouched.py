"""Images without burned-in PHI leave the pixel step byte for byte as they came (unless policy says all text,
or the text is too small to read: masking.unreadable_height)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from node.deid.phi import collect_header_phi
from node.deid.pixels import PixelCleaner
from node.deid.pixels.codec import decode
from node.deid.pixels.policy import load_policy
from tests.deid.pixels.conftest import POLICY, Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import Font, Kind, image_dataset, phantom, text_mask


def _fingerprint(ds: pydicom.Dataset) -> tuple[str, str]:
    return hashlib.md5(ds.PixelData).hexdigest(), str(ds.file_meta.TransferSyntaxUID)


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "emri_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"],
)
def test_real_images_without_text_are_untouched(clean: Clean, name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    before = _fingerprint(ds)
    outcome = clean(ds)
    assert not outcome.redacted and outcome.boxes == 0
    assert _fingerprint(ds) == before
    assert "BurnedInAnnotation" not in ds or ds.BurnedInAnnotation == pydicom.dcmread(get_testdata_file(name)).BurnedInAnnotation


@pytest.mark.parametrize("kind", [Kind("MONOCHROME2", 16, signed=True), Kind("RGB", 8), Kind("PALETTE COLOR", 8)])
def test_generated_phantoms_without_text_are_untouched(clean: Clean, kind: Kind) -> None:
    ds = image_dataset(kind, "CT", np.zeros((512, 512), bool), frames=2)
    before = _fingerprint(ds)
    outcome = clean(ds)
    assert (outcome.redacted, outcome.reason, outcome.ocr_frames) == (False, "no text", 0)
    assert _fingerprint(ds) == before


@pytest.mark.parametrize(
    ("kind", "modality", "size", "full_scale"),
    [(Kind("MONOCHROME2", 16, signed=True), "CT", 512, (-1024, 3071)), (Kind("MONOCHROME2", 12), "MR", 256, (0, 4095))],
    ids=["CT", "MR"],
)
def test_text_free_corpus_stays_untouched_where_small_text_is_masked_unread(
    cleaner: PixelCleaner, kind: Kind, modality: str, size: int, full_scale: tuple[int, int]
) -> None:
    """Small letters are masked unread (masking.unreadable_height), but only a line of several:
    the detector's rare finds on text-free slices (a glyph-sized blob, e.g. CT phantom 7) stay."""
    assert load_policy(POLICY).settings.masking.unreadable_height > 0
    dtype = np.int16 if kind.signed else np.uint16
    for seed in range(40):
        ds = image_dataset(kind, modality, np.zeros((size, size), bool))
        ds.PixelData = np.rint(phantom(size, size, *full_scale, seed)).astype(dtype).tobytes()
        before = _fingerprint(ds)
        outcome = cleaner.clean(ds, collect_header_phi(ds))
        assert not outcome.redacted and outcome.boxes == 0, (seed, outcome.reason)
        assert _fingerprint(ds) == before


def test_text_that_is_not_phi_is_left_alone(clean: Clean) -> None:
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 10), ("AXIAL", "120 KV", "W 400", "L 40"))
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
    before = _fingerprint(ds)
    outcome = clean(ds)
    assert (outcome.redacted, outcome.reason) == (False, "no phi")
    assert outcome.ocr_frames == 1
    assert _fingerprint(ds) == before


def test_instance_without_pixel_data_returns_at_once(clean: Clean) -> None:
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    outcome = clean(ds)
    assert (outcome.redacted, outcome.frames_scanned, outcome.reason) == (False, 0, "no pixel data")


def test_all_text_policy_masks_text_that_is_not_phi(tmp_path: Path) -> None:
    policy = tmp_path / "pixel-policy.yaml"
    policy.write_text("rules:\n  - name: us-all-text\n    when: {modality: [US]}\n    action: detect\n    mask: all_text\n")
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 10), ("AXIAL", "120 KV", "W 400", "L 40"))
    ds = image_dataset(Kind("RGB", 8), "US", mask)
    before = decoded(ds)
    outcome = PixelCleaner.from_policy_file(policy).clean(ds, collect_header_phi(ds))
    assert (outcome.redacted, outcome.reason) == (True, "ocr text")
    assert changed_pixels(before, decoded(ds))[0][mask].mean() >= 0.99


def test_native_frames_are_looked_at_in_place_and_copied_only_to_paint() -> None:
    """A large native instance must not be held twice just to be looked at: the frames are a
    read-only view of the dataset's own bytes, and painting works on a copy of its own."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    before = bytes(ds.PixelData)
    frames = decode(ds)
    assert not frames.values.flags.writeable
    assert np.shares_memory(frames.values, np.frombuffer(ds.PixelData, dtype=np.uint8))
    painted = frames.writable()
    painted[0, :8, :8] = 0
    assert painted is frames.values and frames.values.flags.writeable
    assert ds.PixelData == before
