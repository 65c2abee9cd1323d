"""Black boxes: where a found word becomes a rectangle, and how rectangles are painted on frames.

OCR word boxes can be a pixel or two short of the strokes (and more after upscaling), so a box
is first grown to cover the stroke pixels it touches, then given a margin in proportion to the
text height: every stroke pixel is covered, without blacking out much more than the text.
"""

from __future__ import annotations

import cv2
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


def ink_box(rect: Rect, gray: np.ndarray) -> Rect:
    """The ink's bounding box inside a reader's line box: PP-OCR pads its line boxes by about half
    the text height on every side, so the box itself masks twice the text and more. Otsu's
    threshold inside the box splits it in two; on each side, what touches the box's edge and is
    large (the ground, a label's band, the frame around it) is not ink; the side with more pieces
    left is the glyphs (the other holds their holes). Found on the grey image, not the stroke map:
    outlined and anti-aliased glyphs the stroke gate misses still count. A box where nothing is
    left (anatomy all through it) stays whole."""
    crop = gray[rect.window]
    if crop.ndim == 3:
        crop = crop.max(axis=-1)
    if crop.size == 0 or int(crop.min()) == int(crop.max()):
        return rect
    _, binary = cv2.threshold(np.ascontiguousarray(crop, dtype=np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    sides = [_glyph_pieces(binary), _glyph_pieces(1 - binary)]
    pieces = max(sides, key=len)
    if not pieces:
        return rect
    x0, y0 = min(p[0] for p in pieces), min(p[1] for p in pieces)
    x1, y1 = max(p[0] + p[2] for p in pieces), max(p[1] + p[3] for p in pieces)
    return Rect(rect.x + x0, rect.y + y0, x1 - x0, y1 - y0)


def _glyph_pieces(side: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Connected pieces of one side of the threshold (x, y, w, h), less those touching the box's
    edge that are larger than a glyph could be there (as wide as the box is tall, or nearly as tall)."""
    rows, cols = side.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(side, dtype=np.uint8), connectivity=8)
    pieces = []
    for x, y, w, h, _ in stats[1:count]:
        touches = x == 0 or y == 0 or x + w == cols or y + h == rows
        if touches and (w >= rows or h >= 0.8 * rows):
            continue
        pieces.append((int(x), int(y), int(w), int(h)))
    return pieces


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
