"""Outlined text: light letters in a dark halo drawn in the frame's darkest value. The mask is
painted in the stored range's end, so the halo's strokes change too."""

from __future__ import annotations

import cv2
import numpy as np

from tests.deid.pixels.conftest import Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import Font, Kind, image_dataset, text_block


def test_an_outline_in_the_frames_darkest_value_is_masked(clean: Clean) -> None:
    letters = text_block(320, 288, Font("DejaVuSansMono-Bold.ttf", 11), ("ACC 77310452",), x=70, y=190)
    halo = cv2.dilate(letters.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~letters
    ds = image_dataset(Kind("MONOCHROME2", 12), "CR", letters)
    values = ds.pixel_array.copy()
    values[halo] = values.min()
    ds.PixelData = values.astype("<u2").tobytes()
    before = decoded(ds)
    outcome = clean(ds)
    changed = changed_pixels(before, decoded(ds))[0]
    assert outcome.redacted
    assert changed[letters | halo].mean() >= 0.99
