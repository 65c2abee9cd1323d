"""Text down a margin (a name printed reading upwards or downwards beside the image): the whole
frame is read turned a quarter as well, and what runs along a column there is masked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.deid.pixels.conftest import Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import Kind, image_dataset

FONTS = "/usr/share/fonts/truetype/dejavu/"


def _column(rows: int, cols: int, text: str, font: str, size: int, x: int, y: int, turn: Image.Transpose) -> np.ndarray:
    """`text` drawn then turned a quarter, its top left at (x, y) of a rows x cols mask."""
    pil_font = ImageFont.truetype(FONTS + font, size)
    left, top, right, bottom = pil_font.getbbox(text)
    strip = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(strip).text((1 - left, 1 - top), text, fill=255, font=pil_font)
    turned = np.asarray(strip.transpose(turn)) > 127
    mask = np.zeros((rows, cols), bool)
    mask[y : y + turned.shape[0], x : x + turned.shape[1]] = turned
    return mask


@pytest.mark.parametrize(
    ("font", "turn", "x"),
    [("DejaVuSerif-Bold.ttf", Image.Transpose.ROTATE_90, 6), ("DejaVuSansMono.ttf", Image.Transpose.ROTATE_270, 330)],
    ids=["upwards-left", "downwards-right"],
)
def test_a_name_down_a_margin_is_masked(clean: Clean, font: str, turn: Image.Transpose, x: int) -> None:
    mask = _column(300, 360, "Quill^Barnaby 1957-11-23", font, 15, x, 40, turn)
    ds = image_dataset(Kind("RGB", 8), "SC", mask)
    before = decoded(ds)
    outcome = clean(ds)
    changed = changed_pixels(before, decoded(ds))[0]
    assert outcome.redacted
    assert changed[mask].mean() >= 0.99
    rows, cols = np.nonzero(mask)
    column = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert changed.sum() <= 2 * column  # the column, not the margin or the frame


def test_upright_text_is_not_read_again_as_columns(clean: Clean) -> None:
    """A harmless upright annotation stays: turned, its letters are no lines along a column."""
    mask = np.zeros((300, 360), bool)
    pil_font = ImageFont.truetype(FONTS + "DejaVuSans.ttf", 14)
    canvas = Image.new("L", (360, 300), 0)
    ImageDraw.Draw(canvas).text((20, 250), "W:400 L:40", fill=255, font=pil_font)
    mask |= np.asarray(canvas) > 127
    ds = image_dataset(Kind("MONOCHROME2", 12), "CT", mask)
    before = ds.PixelData
    outcome = clean(ds)
    assert not outcome.redacted and ds.PixelData == before
