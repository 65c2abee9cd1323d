"""Synthetic PHI drawn into every kind of pixel data, judged by pixels (not by OCR).

The header carries the same names, IDs and dates as the image, BurnedInAnnotation is absent or
"NO" (the flag is not trusted). A mask passes if >= 99% of the drawn text pixels changed and the
changed area is at most twice the union of the text lines' bounding boxes.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from tests.deid.pixels.conftest import Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import (
    TEXT_LINES, Font, Kind, anti_aliased_text, image_dataset, text_block, text_boxes_area, text_mask,
)

STANDARD_FONT = Font("DejaVuSans.ttf", 8)


def _assert_masked(clean: Clean, ds: pydicom.Dataset, mask: np.ndarray) -> None:
    before = decoded(ds)
    outcome = clean(ds)
    after = decoded(ds)
    assert outcome.redacted
    assert ds.BurnedInAnnotation == "NO"
    changed = changed_pixels(before, after)
    for frame in changed:
        assert frame[mask].mean() >= 0.99, f"text pixels changed: {frame[mask].mean():.3f}"
        assert frame.sum() <= 2 * text_boxes_area(mask), f"masked {frame.sum()} px for {text_boxes_area(mask)}"


@pytest.mark.parametrize(
    ("modality", "kind", "frames", "burned_in", "size"),
    [
        ("CT", Kind("MONOCHROME2", 16, signed=True), 1, None, 256),
        ("CT", Kind("MONOCHROME2", 12, signed=True), 1, "NO", 256),
        ("MR", Kind("MONOCHROME2", 12), 2, None, 256),
        ("MG", Kind("MONOCHROME1", 16), 1, "NO", 320),
        ("CR", Kind("MONOCHROME1", 12), 1, None, 256),
        ("CR", Kind("MONOCHROME2", 8), 1, "NO", 256),
        ("US", Kind("RGB", 8), 3, None, 256),
        ("US", Kind("RGB", 16), 1, None, 256),
        ("US", Kind("YBR_FULL", 8), 1, "NO", 256),
        ("US", Kind("YBR_FULL_422", 8), 2, None, 256),
        ("US", Kind("PALETTE COLOR", 8), 2, None, 256),
    ],
    ids=lambda v: v.photometric + str(v.bits) + ("s" if v.signed else "") if isinstance(v, Kind) else str(v),
)
def test_native_pixel_data_of_every_kind_is_masked(
    clean: Clean, modality: str, kind: Kind, frames: int, burned_in: str | None, size: int
) -> None:
    mask = text_mask(size, size, STANDARD_FONT)
    ds = image_dataset(kind, modality, mask, frames=frames, burned_in=burned_in)
    syntax = ds.file_meta.TransferSyntaxUID
    _assert_masked(clean, ds, mask)
    assert ds.file_meta.TransferSyntaxUID == syntax
    expected = "RGB" if kind.photometric.startswith("YBR") else kind.photometric
    assert ds.PhotometricInterpretation == expected


@pytest.mark.parametrize(
    ("modality", "kind", "frames", "syntax"),
    [
        ("MR", Kind("MONOCHROME2", 16), 2, RLELossless),
        ("CT", Kind("MONOCHROME2", 16, signed=True), 1, JPEG2000Lossless),
        ("CR", Kind("MONOCHROME2", 12), 1, JPEG2000Lossless),
        ("US", Kind("RGB", 8), 2, RLELossless),
    ],
    ids=lambda v: v.photometric + str(v.bits) if isinstance(v, Kind) else str(v),
)
def test_compressed_pixel_data_is_masked_and_reencoded_losslessly(
    clean: Clean, modality: str, kind: Kind, frames: int, syntax: str
) -> None:
    mask = text_mask(256, 256, STANDARD_FONT)
    ds = image_dataset(kind, modality, mask, frames=frames)
    ds.compress(syntax, generate_instance_uid=False)
    _assert_masked(clean, ds, mask)
    assert ds.file_meta.TransferSyntaxUID == RLELossless


@pytest.mark.parametrize(
    "font",
    [
        Font("plain", 5),
        Font("plain", 6),
        Font("simplex", 6),
        Font("DejaVuSans.ttf", 6),
        Font("DejaVuSansMono.ttf", 6),
        Font("DejaVuSerif.ttf", 6),
        Font("simplex", 8),
        Font("DejaVuSans-Bold.ttf", 12),
        Font("duplex", 14),
    ],
    ids=lambda f: f"{f.family}-{f.height}px",
)
def test_small_text_on_256_mr_is_masked_in_several_fonts(clean: Clean, font: Font) -> None:
    mask = text_mask(256, 256, font)
    _assert_masked(clean, image_dataset(Kind("MONOCHROME2", 12), "MR", mask), mask)


@pytest.mark.parametrize("family", ["DejaVuSans.ttf", "DejaVuSansMono.ttf", "simplex"])
def test_five_pixel_proportional_fonts(clean: Clean, family: str) -> None:
    """Tesseract misreads IDs and dates this small: masked unread (masking.unreadable_height)."""
    mask = text_mask(256, 256, Font(family, 5))
    _assert_masked(clean, image_dataset(Kind("MONOCHROME2", 12), "MR", mask), mask)


def test_text_is_masked_when_the_flag_says_yes_too(clean: Clean) -> None:
    mask = text_mask(256, 256, STANDARD_FONT)
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask, burned_in="YES")
    _assert_masked(clean, ds, mask)


@pytest.mark.parametrize("bone", [0.6, 0.85])
def test_white_text_over_bright_bone_is_masked(clean: Clean, bone: float) -> None:
    """White text across a flat bright structure (a share of full scale): little contrast left."""
    mask = np.zeros((256, 256), bool)
    mask[100:124, 60:200] = text_mask(24, 140, STANDARD_FONT, ("DOE JANE TP4821973",))
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
    values = ds.pixel_array.copy()
    structure = np.zeros_like(mask)
    structure[90:135, 50:210] = True
    values[structure & ~mask] = round(bone * 4095)
    ds.PixelData = values.tobytes()
    _assert_masked(clean, ds, mask)


@pytest.mark.parametrize("ink", [64, 80])
def test_grey_text_on_a_quiet_band_is_masked(clean: Clean, ink: int) -> None:
    """Grey labels (ink well under the detector's fixed contrast of 96) on a flat dark band are
    text all the same: judged against the band's own noise, they are found and masked."""
    mask = text_mask(256, 256, STANDARD_FONT)
    ds = image_dataset(Kind("MONOCHROME2", 8), "CR", mask)
    noise = np.random.default_rng(3).normal(8, 2, (256, 256))
    values = np.where(mask, ink, np.where(ds.pixel_array > 60, ds.pixel_array, noise))  # phantom body stays
    values[0, 0], values[-1, -1] = 0, 255  # the display range is the whole 8 bits
    ds.PixelData = np.clip(np.rint(values), 0, 255).astype(np.uint8).tobytes()
    _assert_masked(clean, ds, mask)


@pytest.mark.parametrize("height", [9, 14, 24])
def test_dark_text_on_a_light_label_in_a_dark_frame_is_masked(clean: Clean, height: int) -> None:
    """A printed label: a light band on a dark CR frame with the PHI in dark letters on it."""
    mask = text_block(512, 512, Font("DejaVuSans.ttf", height), TEXT_LINES, x=200, y=300)
    ds = image_dataset(Kind("MONOCHROME2", 12), "CR", np.zeros(mask.shape, bool))
    values = ds.pixel_array.copy()
    rows, cols = np.nonzero(mask)
    values[rows.min() - 4 : rows.max() + 5, cols.min() - 4 : cols.max() + 5] = 3500  # the label's band
    values[mask] = 300  # its ink
    ds.PixelData = values.astype("<u2").tobytes()
    _assert_masked(clean, ds, mask)


@pytest.mark.parametrize(("modality", "kind"), [("CR", Kind("MONOCHROME2", 8)), ("US", Kind("RGB", 8))], ids=["CR", "US"])
def test_anti_aliased_text_on_a_flat_band_is_masked(clean: Clean, modality: str, kind: Kind) -> None:
    """Renderers smooth text edges: at 16 px most of a stroke's pixels are edge pixels, between
    the band and the ink, which is not one ink level until the edges are set aside."""
    coverage = anti_aliased_text(384, 384, Font("DejaVuSans.ttf", 16), TEXT_LINES, x=12, y=12)
    ds = image_dataset(kind, modality, np.zeros(coverage.shape, bool))
    values = ds.pixel_array.astype(np.float64)
    band = np.zeros(coverage.shape, bool)
    band[: 12 + 4 * round(16 * 1.9) + 8, :260] = True
    if values.ndim == 3:
        band, coverage = band[..., np.newaxis], coverage[..., np.newaxis]
    values = np.where(band, 0, values) * (1 - coverage) + 255 * coverage
    ds.PixelData = np.rint(values).astype(np.uint8).tobytes()
    _assert_masked(clean, ds, coverage.squeeze() > 0.5)
