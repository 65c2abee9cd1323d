"""Mask scope all_text_outside_image: ultrasound text around the declared image areas goes, read
or not; inside them only PHI goes. Judged by pixels, on real ultrasound and on drawn text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

from node.deid.phi import collect_header_phi
from node.deid.pixels import PixelCleaner
from node.deid.pixels.detect import Rect
from node.deid.pixels.image_area import ultrasound_regions
from node.deid.pixels.policy import MaskScope, load_policy
from tests.deid.pixels.conftest import POLICY, Clean
from tests.deid.pixels.judge import changed_pixels, decoded, printed_text
from tests.deid.pixels.synthetic import Font, Kind, image_dataset, text_boxes_area, text_mask

FONT = Font("DejaVuSans.ttf", 8)
IMAGE_AREA = (40, 44, 279, 211)  # x0, y0, x1, y1 (inclusive) of the declared region
# (text, x, y): outside the area, then inside it; PHI is the header's name and ID (synthetic.py)
OUTSIDE = (("GEN 5.0 MHZ", 4, 8), ("DOE JANE", 200, 8), ("FR 30 HZ", 4, 226))
INSIDE_PHI = (("TP4821973", 60, 60),)
INSIDE_OTHER = (("LIVER", 60, 150),)


def _region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
    item = Dataset()
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.RegionSpatialFormat, item.RegionDataType = 1, 1
    return item


def _mask(lines: tuple[tuple[str, int, int], ...], rows: int = 256, cols: int = 320) -> np.ndarray:
    mask = np.zeros((rows, cols), bool)
    for text, x, y in lines:
        mask[y : y + 24, x : x + 120] |= text_mask(24, 120, FONT, (text,))
    return mask


def _ultrasound(*, regions: bool, frames: int = 1) -> pydicom.Dataset:
    ds = image_dataset(Kind("RGB", 8), "US", _mask(OUTSIDE + INSIDE_PHI + INSIDE_OTHER), frames=frames)
    if regions:
        ds.SequenceOfUltrasoundRegions = [_region(*IMAGE_AREA)]
    return ds


@pytest.mark.parametrize("frames", [1, 2])
def test_all_text_outside_the_image_area_goes_and_only_phi_inside(clean: Clean, frames: int) -> None:
    ds = _ultrasound(regions=True, frames=frames)
    before = decoded(ds)
    outcome = clean(ds)
    changed = changed_pixels(before, decoded(ds))
    assert outcome.redacted and "text outside image" in outcome.reason
    gone, kept = _mask(OUTSIDE + INSIDE_PHI), _mask(INSIDE_OTHER)
    for frame in changed:
        assert frame[gone].mean() >= 0.99, f"text pixels changed: {frame[gone].mean():.3f}"
        assert not frame[kept].any()  # text inside the image that is not PHI stays
        assert frame.sum() <= 2 * text_boxes_area(gone), f"masked {frame.sum()} px for {text_boxes_area(gone)}"


def test_without_declared_regions_only_phi_goes(clean: Clean) -> None:
    ds = _ultrasound(regions=False)
    before = decoded(ds)
    outcome = clean(ds)
    changed = changed_pixels(before, decoded(ds))[0]
    assert outcome.reason == "ocr phi"
    phi = _mask((OUTSIDE[1], *INSIDE_PHI))
    assert changed[phi].mean() >= 0.99
    assert not changed[_mask((OUTSIDE[0], OUTSIDE[2], *INSIDE_OTHER))].any()


def test_shipped_policy_masks_all_text_outside_the_image_on_ultrasound() -> None:
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"), stop_before_pixels=True)
    assert load_policy(POLICY).decide(ds).mask is MaskScope.ALL_TEXT_OUTSIDE_IMAGE


def test_declared_regions_are_clipped_to_the_frame_and_max_corners_are_inclusive() -> None:
    ds = Dataset()
    incomplete = _region(0, 0, 10, 10)
    del incomplete.RegionLocationMaxY1
    ds.SequenceOfUltrasoundRegions = [_region(120, 60, 800, 518), _region(176, 522, 743, 576), incomplete]
    assert ultrasound_regions(ds, 350, 800) == [Rect(120, 60, 680, 290)]  # the second lies below the frame


def _read(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return pydicom.dcmread(path)


# Real ultrasound with a Sequence of Ultrasound Regions: (name, text boxes outside, text boxes inside
# that are not PHI); boxes are (x, y, w, h) around printed text.
REAL = [
    # Inside: a measurement the vocabulary knows ("1.06 cm" of "+ Cist Mag 1.06 cm"; the words read
    # as "Cist Mag" are not known, and go). ALOKA's glyph inside the image reads as nothing sure: it goes.
    ("examples_palette.dcm", [(0, 62, 100, 200)], [(240, 84, 70, 22)]),  # settings column
    ("gdcm-US-ALOKA-16.dcm", [(80, 0, 170, 22), (0, 450, 110, 22), (540, 450, 100, 22)], []),
]


@pytest.mark.parametrize(("name", "outside", "inside"), REAL, ids=[r[0] for r in REAL])
def test_real_ultrasound_text_outside_the_regions_goes(
    clean: Clean, name: str, outside: list[tuple[int, int, int, int]], inside: list[tuple[int, int, int, int]]
) -> None:
    ds = _read(name)
    assert "SequenceOfUltrasoundRegions" in ds
    before = decoded(ds)
    outcome = clean(ds)
    changed = changed_pixels(before, decoded(ds))[0]
    assert outcome.redacted and "text outside image" in outcome.reason
    for box in outside:
        text = printed_text(ds, before[0], box)
        assert text.sum() > 50
        assert changed[text].mean() >= 0.99, f"{box}: {changed[text].mean():.3f}"
    for x, y, w, h in inside:
        assert not changed[y : y + h, x : x + w].any()


def test_real_multiframe_ultrasound_loses_its_settings_column(clean: Clean) -> None:
    """Frame 0 shows the column white on black; frame 1 (a colour-flow frame) draws it at 6 of 255
    over 1, invisible, and no detector finds it there: only frame 0 is judged."""
    ds = _read("OBXXXX1A_2frame.dcm")
    before = decoded(ds)
    clean(ds)
    changed = changed_pixels(before, decoded(ds))
    text = printed_text(ds, before[0], (0, 62, 100, 200))  # "Gen OB", "C5-1" ... left of the image area
    assert text.sum() > 50
    assert changed[0][text].mean() >= 0.99
    assert (changed[:, 59:] == 0).mean() > 0.99  # the image itself, and frame 1's background, are left alone


def test_real_cine_loses_the_text_right_of_the_image_on_every_frame(clean: Clean) -> None:
    ds = _read("color3d_jpeg_baseline.dcm")
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))[:3]
    ds.PixelData, ds.NumberOfFrames = encapsulate(frames), len(frames)
    before = decoded(ds)
    clean(ds)
    changed = changed_pixels(before, decoded(ds))
    for index, frame in enumerate(changed):
        for box in ((600, 25, 40, 40), (600, 122, 40, 75)):  # "Crd P21", "MI 0.9 TIS 0.7"
            text = printed_text(ds, before[index], box)
            assert text.sum() > 50
            assert frame[text].mean() >= 0.99
        assert not frame[100:400, 100:540].any()  # the heart is untouched


def test_whole_frame_reading_masks_words_outside_the_regions_too(tmp_path: Path) -> None:
    """Action "ocr" reads whole frames as well; what it reads outside the image areas goes."""
    policy = tmp_path / "pixel-policy.yaml"
    policy.write_text(
        "rules:\n  - name: us\n    when: {modality: [US]}\n    action: ocr\n    mask: all_text_outside_image\n"
        "detector: {min_text_height: 60}\n"  # the detector finds no 8 px text: only whole frames are read
        f"deny: {{vocabulary: {POLICY.parent / 'pixel-vocabulary.yaml'}}}\n"
    )
    ds = _ultrasound(regions=True)
    before = decoded(ds)
    outcome = PixelCleaner.from_policy_file(policy).clean(ds, collect_header_phi(ds))
    changed = changed_pixels(before, decoded(ds))[0]
    assert outcome.redacted
    assert changed[_mask(OUTSIDE)].mean() >= 0.99
    assert not changed[_mask(INSIDE_OTHER)].any()
