"""Black boxes: where a found word becomes a rectangle, and how rectangles are painted on frames.

OCR word boxes can be a pixel or two short of the strokes (and more after upscaling), so a box
is first grown to cover the stroke pixels it touches, then given a margin in proportion to the
text height: every stroke pixel is covered, without blacking out much more than the text.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.deid.pixels.detect import Rect
from node.deid.pixels.policy import MaskSettings

CLEAN_PIXEL_CODE = ("113101", "DCM", "Clean Pixel Data Option")


def snap_to_strokes(rect: Rect, strokes: np.ndarray, limit: Rect) -> Rect:
    """Grow `rect` while the next row or column inside `limit` still holds stroke pixels."""
    x0, y0, x1, y1 = rect.x, rect.y, rect.x + rect.w, rect.y + rect.h
    lx0, ly0, lx1, ly1 = limit.x, limit.y, limit.x + limit.w, limit.y + limit.h
    grew = True
    while grew:
        grew = False
        if x0 > lx0 and strokes[y0:y1, x0 - 1].any():
            x0, grew = x0 - 1, True
        if x1 < lx1 and strokes[y0:y1, x1].any():
            x1, grew = x1 + 1, True
        if y0 > ly0 and strokes[y0 - 1, x0:x1].any():
            y0, grew = y0 - 1, True
        if y1 < ly1 and strokes[y1, x0:x1].any():
            y1, grew = y1 + 1, True
    return Rect(x0, y0, x1 - x0, y1 - y0)


def tighten(rect: Rect, strokes: np.ndarray) -> Rect:
    """The stroke pixels' bounding box inside `rect` (OCR boxes are loose after upscaling)."""
    ys, xs = np.nonzero(strokes[rect.window])
    if ys.size == 0:
        return rect
    return Rect(rect.x + int(xs.min()), rect.y + int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)


def mask_rect(word: Rect, strokes: np.ndarray, limit: Rect, settings: MaskSettings) -> Rect:
    rows, cols = strokes.shape
    snapped = snap_to_strokes(tighten(word.intersect(limit), strokes), strokes, limit)
    margin = max(settings.min_margin, round(settings.margin_fraction * snapped.h))
    return snapped.grown(margin, rows, cols)


def paint(values: np.ndarray, frame: int, rect: Rect, fill: np.ndarray) -> None:
    values[frame][rect.window] = fill


def mark_clean(ds: Dataset) -> None:
    """Record the Clean Pixel Data Option, keeping any method codes already present."""
    ds.BurnedInAnnotation = "NO"
    if "DeidentificationMethodCodeSequence" not in ds:
        ds.DeidentificationMethodCodeSequence = Sequence()
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_CODE
    ds.DeidentificationMethodCodeSequence.append(item)
