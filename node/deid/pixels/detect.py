"""A cheap burned-in text detector that decides where OCR runs.

Burned-in text is thin strokes of one ink colour, brighter than what surrounds them (or darker,
on a light page), in short horizontal runs. A top-hat finds the strokes, a horizontal closing
joins letters into words and lines, and connected components of the right height, stroke density
and ink uniformity are the candidates. On a 512x512 frame
this costs a few milliseconds, so every image can be looked at; OCR (about 0.15 s a call) then
reads only what the detector found.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from node.deid.pixels.policy import DetectorSettings

_SQUARE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def grown(self, margin: int, rows: int, cols: int) -> "Rect":
        x0, y0 = max(0, self.x - margin), max(0, self.y - margin)
        x1, y1 = min(cols, self.x + self.w + margin), min(rows, self.y + self.h + margin)
        return Rect(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def union(self, other: "Rect") -> "Rect":
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1 = max(self.x + self.w, other.x + other.w)
        y1 = max(self.y + self.h, other.y + other.h)
        return Rect(x0, y0, x1 - x0, y1 - y0)

    def intersect(self, other: "Rect") -> "Rect":
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1 = min(self.x + self.w, other.x + other.w)
        y1 = min(self.y + self.h, other.y + other.h)
        return Rect(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _highlight_table(fraction: float) -> np.ndarray:
    floor = 255 * (1 - fraction)
    return np.clip((np.arange(256, dtype=np.float32) - floor) / fraction, 0, 255).astype(np.uint8)


def find_text(gray: np.ndarray, settings: DetectorSettings, *, highlight: bool) -> tuple[np.ndarray, list[Rect]]:
    """Stroke pixels (thin, standing out from their surroundings) and candidate text boxes.

    A top-hat (image minus its opening) keeps bright strokes thinner than `max_stroke_width`
    whatever the background level, so light-grey text on a mid-grey bar is found as well as white
    on black; on a light page the black-hat finds dark text. With `highlight`, the top of the
    display range is also looked at stretched, where white text over bright bone stands out;
    an opening commutes with that stretch, so one opening serves both views.
    """
    width = settings.max_stroke_width + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (width, width))
    opened = cv2.morphologyEx(gray, cv2.MORPH_OPEN, kernel)
    strokes = cv2.subtract(gray, opened) >= settings.min_contrast
    views = [gray]
    if highlight:
        table = _highlight_table(settings.highlight_fraction)
        bright = cv2.LUT(gray, table)
        strokes |= cv2.subtract(bright, cv2.LUT(opened, table)) >= settings.min_contrast
        views.append(bright)
    if gray[::4, ::4].mean() >= 128:  # a light page: dark text
        strokes |= cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel) >= settings.min_contrast
    strokes_u8 = strokes.astype(np.uint8)
    return strokes_u8, text_candidates(views, strokes_u8, settings)


def text_candidates(views: list[np.ndarray], strokes: np.ndarray, settings: DetectorSettings) -> list[Rect]:
    """Boxes that may hold a line of text; recall matters more than precision here."""
    # Stroke pixels in lines have neighbours; lone noise pixels do not: drop those before linking.
    lined = strokes & (cv2.boxFilter(strokes, -1, (3, 3), normalize=False) >= 3)
    link = max(3, settings.min_text_height + 1)
    joined = cv2.morphologyEx(lined, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (link, 1)))
    joined = cv2.dilate(joined, _SQUARE)
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    pieces = [  # letters or words: the right height, and at least a stroke's worth of pixels
        Rect(int(x), int(y), int(w), int(h))
        for x, y, w, h, _area in stats[1:count]
        if settings.min_text_height <= h <= settings.max_text_height + 2
        and strokes[y : y + h, x : x + w].sum() >= settings.min_text_height
    ]
    # Judge letters and words on their own (a logo beside a name must not spoil it), then keep
    # each joined line that holds at least one, with its small neighbours ("1" of "1970", a hyphen).
    texts = [piece for piece in pieces if _text_like(piece, views, strokes, settings)]
    return [line for line in merge_lines(pieces) if any(line.intersect(t) == t for t in texts)]


def _text_like(box: Rect, views: list[np.ndarray], strokes: np.ndarray, settings: DetectorSettings) -> bool:
    window = (slice(box.y, box.y + box.h), slice(box.x, box.x + box.w))
    box_strokes = strokes[window]
    count = int(box_strokes.sum())  # a word has at least a few strokes' worth of pixels
    if count < 3 * settings.min_text_height or count < settings.min_stroke_fill * box.w * box.h:
        return False
    return box.w >= settings.min_text_height and any(_rendered(view[window], box_strokes, settings) for view in views)


def _rendered(region: np.ndarray, strokes: np.ndarray, settings: DetectorSettings) -> bool:
    """Rendered text has one ink colour that stands well clear of its background; speckle,
    vessels and bone edges vary from pixel to pixel and sit closer to their surroundings."""
    mask = strokes > 0
    ink = region[mask]
    if ink.size == 0 or ink.size == region.size:
        return False
    window = np.ones(2 * settings.ink_tolerance + 1)
    near = np.convolve(np.bincount(ink, minlength=256), window, mode="same")
    level = int(near.argmax())  # the ink colour: most stroke pixels lie within tolerance of it
    uniform = near[level] >= settings.min_ink_share * ink.size
    return bool(uniform) and abs(level - float(region[~mask].mean())) >= settings.min_text_contrast


def merge_lines(boxes: list[Rect]) -> list[Rect]:
    """Join boxes side by side on one line (gap under a text height): words split at wide letter
    spacing are read, and masked, as a whole."""
    merged = sorted(boxes, key=lambda r: r.x)
    changed = True
    while changed:
        changed = False
        out: list[Rect] = []
        for box in merged:
            partner = next((i for i, o in enumerate(out) if _same_line(o, box)), None)
            if partner is None:
                out.append(box)
            else:
                out[partner] = out[partner].union(box)
                changed = True
        merged = out
    return merged


def _same_line(a: Rect, b: Rect) -> bool:
    overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
    return overlap >= 0.5 * min(a.h, b.h) and gap <= max(a.h, b.h)
