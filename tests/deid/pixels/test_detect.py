"""The detector on real frames: texture is not read as text, grey labels on quiet bands are, and
the fast line merging joins exactly what the plain pairwise rule joins."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from node.deid.pixels.codec import decode, display
from node.deid.pixels.detect import Rect, find_text, merge_lines
from node.deid.pixels.policy import load_policy
from tests.deid.pixels.conftest import POLICY
from tests.deid.pixels.synthetic import Kind, image_dataset, phantom

DETECTOR = load_policy(POLICY).settings.detector


def _candidates(name: str, frame: int = 0) -> list[Rect]:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    ds = pydicom.dcmread(path)
    frames = decode(ds)
    gray, colour, _ = display(frames.values[frame], frames.photometric, ds, None)
    return find_text(gray, DETECTOR, highlight=frames.photometric.startswith("MONOCHROME"), colour=colour)[1]


def _covered(box: tuple[int, int, int, int], candidates: list[Rect]) -> bool:
    x, y, w, h = box
    return any(c.intersect(Rect(x, y, w, h)) == Rect(x, y, w, h) for c in candidates)


def test_colour_flow_chained_into_blocks_is_taken_apart_and_text_stays() -> None:
    """US1's power Doppler chains into blocks 83 and 55 px tall across the image; reading them cost
    more than all the text on the frame. The overlay text is still found."""
    candidates = _candidates("US1_UNCR.dcm")
    assert max(c.h for c in candidates) <= DETECTOR.max_text_height + 2
    assert not any(c.w > 200 and 110 <= c.y <= 340 for c in candidates)  # nothing spans the image area
    assert _covered((19, 25, 150, 14), candidates)  # BAPTIST MED CTR
    assert _covered((399, 457, 220, 14), candidates)  # TIS<0.4 MI=0.8 AO=100%


def test_ink_of_drifting_hue_is_not_text() -> None:
    """The second frame of the Philips loop is a colour-flow frame: its speckle is bright in its
    brightest channel throughout, but its hue drifts from pixel to pixel."""
    assert not any(120 <= c.x and c.y >= 120 for c in _candidates("OBXXXX1A_2frame.dcm", frame=1))


def test_grey_labels_on_a_flat_band_are_text() -> None:
    """The Sonosite loop's grey labels right of the image ("B", the side icons) stand 70-80 levels
    above a black band that varies by 1-3: under the fixed contrast of 96, found all the same."""
    assert _covered((595, 263, 40, 16), _candidates("color3d_jpeg_baseline.dcm"))


def _joined_pairwise(boxes: list[Rect]) -> list[Rect]:
    """The rule merge_lines implements, as plainly as it can be written."""

    def same_line(a: Rect, b: Rect) -> bool:
        overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
        gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
        return overlap >= 0.5 * min(a.h, b.h) and gap <= max(a.h, b.h)

    merged = sorted(boxes, key=lambda r: r.x)
    changed = True
    while changed:
        changed = False
        out: list[Rect] = []
        for box in merged:
            partner = next((i for i, o in enumerate(out) if same_line(o, box)), None)
            if partner is None:
                out.append(box)
            else:
                out[partner] = out[partner].union(box)
                changed = True
        merged = out
    return merged


_BOXES = st.lists(
    st.builds(Rect, st.integers(0, 300), st.integers(0, 300), st.integers(1, 40), st.integers(1, 40)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(_BOXES)
def test_line_merging_joins_what_the_pairwise_rule_joins(boxes: list[Rect]) -> None:
    assert sorted(merge_lines(boxes), key=_order) == sorted(_joined_pairwise(boxes), key=_order)


def _order(r: Rect) -> tuple[int, int, int, int]:
    return r.x, r.y, r.w, r.h


def test_generated_ct_slices_without_text_stay_without_candidates() -> None:
    ds = image_dataset(Kind("MONOCHROME2", 12, signed=True), "CT", np.zeros((256, 256), bool))
    for seed in range(5):
        values = np.rint(phantom(256, 256, -2048, 2047, seed)).astype(np.int16)
        gray, _, _ = display(values, "MONOCHROME2", ds, None)
        assert find_text(gray, DETECTOR, highlight=True)[1] == []
