"""PP-OCR's line boxes are padded by about half the text height: the mask is the ink inside them."""

from __future__ import annotations

import numpy as np
import pytest

from node.deid.pixels.detect import Rect
from node.deid.pixels.redact import ink_box
from tests.deid.pixels.synthetic import Font, anti_aliased_text

LINE = ("Doe^Jane 1961-04-09",)


def _ink_extent(coverage: np.ndarray) -> Rect:
    rows, cols = np.nonzero(coverage > 0)
    return Rect(int(cols.min()), int(rows.min()), int(cols.max() - cols.min()) + 1, int(rows.max() - rows.min()) + 1)


def _padded(text: Rect, shape: tuple[int, ...]) -> Rect:
    return text.grown(max(3, text.h // 2), *shape[:2])


@pytest.mark.parametrize("font", [Font("DejaVuSerif.ttf", 11), Font("DejaVuSansMono-Bold.ttf", 18)], ids=["serif", "mono"])
def test_anti_aliased_text_on_a_grey_ground_is_its_ink(font: Font) -> None:
    coverage = anti_aliased_text(200, 400, font, LINE, x=37, y=121)
    gray = np.rint(90 * (1 - coverage) + 230 * coverage).astype(np.uint8)
    text = _ink_extent(coverage)
    found = ink_box(_padded(text, gray.shape), gray)
    edged = found.grown(1, *gray.shape)  # the faintest edge pixels sit under the mask's margin (>= 1 px)
    assert edged.union(text) == edged  # every pixel the renderer touched
    assert found.w * found.h <= 1.2 * text.w * text.h


def test_dark_text_on_a_light_band_in_a_dark_frame_leaves_the_band_out() -> None:
    coverage = anti_aliased_text(160, 300, Font("DejaVuSans.ttf", 10), LINE, x=60, y=70)
    text = _ink_extent(coverage)
    gray = np.full(coverage.shape, 15, np.uint8)
    gray[text.grown(3, *gray.shape).window] = 210  # the label's band, narrower than the padding
    gray = np.rint(gray * (1 - coverage) + 40 * coverage).astype(np.uint8)
    found = ink_box(_padded(text, gray.shape), gray)
    assert found.union(text) == found
    assert found.w * found.h <= 1.2 * text.w * text.h


def test_a_box_over_speckle_stays_whole() -> None:
    gray = np.random.default_rng(7).integers(0, 256, (80, 120), dtype=np.uint8)
    box = Rect(10, 20, 90, 30)
    assert ink_box(box, gray) == box
