"""A cheap burned-in text detector that decides where OCR runs.

Burned-in text is thin strokes of one ink colour (at their core, where a renderer smoothed their
edges), brighter than what surrounds them (or darker, on a light page or a light label), in short
horizontal runs. A top-hat finds the strokes, a horizontal closing joins letters into words and
lines, and connected components of the right height, stroke density and ink uniformity (in colour
frames: of every channel) are the candidates; texture that chains into blocks no line of text
could be is taken apart again. On a 512x512 frame this costs a few milliseconds, so every image
can be looked at; OCR (about 0.15 s a call) then reads only what the detector found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from node.deid.pixels.policy import DetectorSettings

_SQUARE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
_CHAIN = 10  # pieces: texture chains hold dozens, a line of text a handful
_BLOCK = 256  # boxes compared at a time


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def window(self) -> tuple[slice, slice]:
        """The box as array indices: rows, then columns."""
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def overlaps(self, other: "Rect") -> bool:
        overlap = self.intersect(other)
        return overlap.w > 0 and overlap.h > 0

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


@lru_cache(maxsize=8)
def _highlight_table(fraction: float) -> np.ndarray:
    floor = 255 * (1 - fraction)
    return np.clip((np.arange(256, dtype=np.float32) - floor) / fraction, 0, 255).astype(np.uint8)


def find_text(
    gray: np.ndarray, settings: DetectorSettings, *, highlight: bool, colour: np.ndarray | None = None
) -> tuple[np.ndarray, list[Rect]]:
    """Stroke pixels (thin, standing out from their surroundings) and candidate text boxes.

    A top-hat (image minus its opening) keeps bright strokes thinner than `max_stroke_width`
    whatever the background level, so light-grey text on a mid-grey bar is found as well as white
    on black; on a light page the black-hat finds dark text, and in a dark frame dark text on a
    light label is looked for on its own (`_labels`). With `highlight`, the top of the
    display range is also looked at stretched, where white text over bright bone stands out;
    an opening commutes with that stretch, so one opening serves both views. `colour` (the
    frame's channels on the display scale) lets colour frames reject ink of varying hue.
    """
    width = settings.max_stroke_width + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (width, width))
    opened = cv2.morphologyEx(gray, cv2.MORPH_OPEN, kernel)
    strokes = _at_least(cv2.subtract(gray, opened), settings.min_contrast)
    views = [gray]
    if highlight:
        table = _highlight_table(settings.highlight_fraction)
        bright = cv2.LUT(gray, table)
        strokes |= _at_least(cv2.subtract(bright, cv2.LUT(opened, table)), settings.min_contrast)
        views.append(bright)
    if gray[::4, ::4].mean() >= 128:  # a light page: dark text
        strokes |= _at_least(cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel), settings.min_contrast)
        return strokes, text_candidates(views, strokes, settings, colour)
    candidates = text_candidates(views, strokes, settings, colour)
    labels, label_strokes = _labels(gray, kernel, settings)
    # Where a label and a bright candidate overlap, the ground decides which is the text: dark
    # letters on a light band leave light gaps the top-hat takes for strokes, and bright letters
    # leave dark gaps the closing fills. The text is what the box's ground is not.
    labels = [box for box in labels if float(np.median(gray[box.window])) >= 128]
    candidates = [c for c in candidates if not any(c.overlaps(box) for box in labels)]
    for box in labels:  # the stroke map there is the dark text's
        strokes[box.window] = label_strokes[box.window]
    return strokes, candidates + labels


def _labels(gray: np.ndarray, kernel: np.ndarray, settings: DetectorSettings) -> tuple[list[Rect], np.ndarray]:
    """Dark text on the light bands and boxes of a dark frame (a printed label): candidates found
    on their own, in the frame seen inverted, from dark strokes whose surroundings are light, on
    a flat ground only (a label's band is flat; bright anatomy with dark gaps in it is not)."""
    closed = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, kernel)
    dark = _at_least(cv2.subtract(closed, gray), settings.min_contrast) & _at_least(closed, settings.label_ground)
    if not dark.any():
        return [], dark
    return text_candidates([cv2.bitwise_not(gray)], dark, settings, flat_ground=True), dark


def _at_least(contrast: np.ndarray, level: int) -> np.ndarray:
    """1 where `contrast` (8-bit) reaches `level`, else 0, as uint8 (OpenCV's threshold: a numpy
    comparison and conversion cost several times more on every frame)."""
    return cv2.threshold(contrast, level - 1, 1, cv2.THRESH_BINARY)[1]


def text_candidates(
    views: list[np.ndarray], strokes: np.ndarray, settings: DetectorSettings, colour: np.ndarray | None = None,
    *, flat_ground: bool = False,
) -> list[Rect]:
    """Boxes that may hold a line of text; recall matters more than precision here. With
    `flat_ground`, only text on a quiet background counts, however far its ink stands clear."""
    # Stroke pixels in lines have neighbours; lone noise pixels do not: drop those before linking.
    lined = strokes & (cv2.boxFilter(strokes, -1, (3, 3), normalize=False) >= 3)
    link = max(3, settings.min_text_height + 1)
    joined = cv2.morphologyEx(lined, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (link, 1)))
    joined = cv2.dilate(joined, _SQUARE)
    pieces = [  # letters or words: the right height, and at least a stroke's worth of pixels
        Rect(x, y, w, h)
        for x, y, w, h in _components(joined)
        if settings.min_text_height <= h <= settings.max_text_height + 2
        and strokes[y : y + h, x : x + w].sum() >= settings.min_text_height
    ]
    # Judge letters and words on their own (a logo beside a name must not spoil it), then keep
    # each joined line that holds at least one, with its small neighbours ("1" of "1970", a hyphen).
    texts = [piece for piece in pieces if _text_like(piece, views, strokes, settings, colour, flat_ground=flat_ground)]
    if not texts:
        return []
    lines = merge_lines(pieces)
    return _untangled(lines, pieces, texts, settings.max_text_height + 2)


def _components(image: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Bounding boxes of the 8-connected components of `image`, labelled within the box that holds
    its nonzero pixels: most frames have little or no text-like ink, and labelling a whole frame
    costs milliseconds whatever it holds."""
    x0, y0, w0, h0 = cv2.boundingRect(image)
    if w0 == 0 or h0 == 0:
        return
    count, _, stats, _ = cv2.connectedComponentsWithStats(image[y0 : y0 + h0, x0 : x0 + w0], connectivity=8)
    for x, y, w, h, _area in stats[1:count].tolist():
        yield x + x0, y + y0, w, h


def _untangled(lines: list[Rect], pieces: list[Rect], texts: list[Rect], tallest: int) -> list[Rect]:
    """The lines that hold a text-like piece, texture chains taken apart.

    Speckle and flow chain dozens of pieces into blocks taller than text can be, or than twice
    their tallest text-like piece, sweeping real labels beside them along (reading one costs more
    than all the text on an ultrasound frame). There the text-like pieces are lined up again with
    their direct neighbours on the line that are no taller than they are (the "1" of "1970"), or
    kept one by one; of these, only what is wider than tall stays: a glyph-sized blob in texture
    is speckle or flow, and no name, ID or date is a single character. A line of a few pieces
    stays whole, whatever its shape (a logo over a time).
    """
    good: list[Rect] = []
    stray: list[Rect] = []
    for line, held, members in zip(lines, _contains(lines, texts), _contains(lines, pieces)):
        inside = [t for t, is_in in zip(texts, held) if is_in]
        if inside and (members.sum() < _CHAIN or _line_shaped(line, inside, tallest)):
            good.append(line)
        elif inside:
            stray.extend(inside)
            stray.extend(_neighbours(line, pieces, inside))
    if not stray:
        return good
    stray = list(dict.fromkeys(stray))  # a piece can lie in two lines' boxes
    lined = merge_lines(stray)
    relined = [
        line for line, held in zip(lined, _contains(lined, texts))
        if _line_shaped(line, [t for t, is_in in zip(texts, held) if is_in], tallest)
    ]
    placed = np.zeros(len(stray), dtype=bool)
    for row in _contains(relined, stray):
        placed |= row
    lone = [piece for piece, is_placed in zip(stray, placed) if not is_placed and piece in texts]
    return good + [box for box in relined + lone if box.w > box.h]


def _line_shaped(line: Rect, texts: list[Rect], tallest: int) -> bool:
    return bool(texts) and line.h <= min(tallest, 2 * max(t.h for t in texts))


def _neighbours(line: Rect, pieces: list[Rect], texts: list[Rect]) -> list[Rect]:
    """Pieces in `line` beside one of `texts` on its line, and no taller than the tallest of them."""
    cap = max(t.h for t in texts)
    members = [p for p, inside in zip(pieces, next(_contains([line], pieces))) if inside and p.h <= cap]
    return [p for p in members if p not in texts and any(_on_one_line(p, t) for t in texts)]


def _on_one_line(a: Rect, b: Rect) -> bool:
    """Side by side on a line: overlapping vertically by half the lower one's height, with a gap
    of at most the taller one's height (plain comparisons: merge_lines asks this thousands of times)."""
    low, high = (a.h, b.h) if a.h <= b.h else (b.h, a.h)
    left, right = (a, b) if a.x <= b.x else (b, a)
    if right.x - (left.x + left.w) > high:
        return False
    top = a.y if a.y >= b.y else b.y
    bottom = a.y + a.h if a.y + a.h <= b.y + b.h else b.y + b.h
    return 2 * (bottom - top) >= low


def _contains(outer: list[Rect], inner: list[Rect]) -> Iterator[np.ndarray]:
    """For each outer box in turn, which of the inner boxes it contains; worked out with arrays
    a block of outer boxes at a time (a noisy frame has thousands of boxes of each kind)."""
    b = np.array([(r.x, r.y, r.x + r.w, r.y + r.h) for r in inner]).reshape(1, len(inner), 4)
    for start in range(0, len(outer), _BLOCK):
        block = outer[start : start + _BLOCK]
        a = np.array([(r.x, r.y, r.x + r.w, r.y + r.h) for r in block]).reshape(len(block), 1, 4)
        yield from (a[..., 0] <= b[..., 0]) & (a[..., 1] <= b[..., 1]) & (a[..., 2] >= b[..., 2]) & (a[..., 3] >= b[..., 3])


def _text_like(
    box: Rect, views: list[np.ndarray], strokes: np.ndarray, settings: DetectorSettings, colour: np.ndarray | None,
    *, flat_ground: bool = False,
) -> bool:
    window = box.window
    box_strokes = strokes[window]
    count = int(box_strokes.sum())  # a word has at least a few strokes' worth of pixels
    if count < 3 * settings.min_text_height or count < settings.min_stroke_fill * box.w * box.h:
        return False
    rendered = (_rendered(view[window], box_strokes, settings, quiet=i == 0, flat_ground=flat_ground)
                for i, view in enumerate(views))
    if box.w < settings.min_text_height or not any(rendered):
        return False
    if colour is None:
        return True
    return _one_colour(colour[window], _ink(views[0][window], box_strokes > 0, settings), settings)


def _ink(region: np.ndarray, strokes: np.ndarray, settings: DetectorSettings) -> np.ndarray:
    """The stroke pixels that are ink: all of them where their level is uniform, else their core."""
    return strokes if _ink_level(region[strokes], settings)[1] else _core(region, strokes)


def _core(region: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """The stroke pixels on the ink's side of halfway from the ground to the ink's extreme.
    Anti-aliased text fades into its ground over a pixel or so, and at small sizes those fading
    pixels, of every level between ground and ink, are most of a stroke."""
    ink = region[strokes]
    ground = float(region[~strokes].mean())
    if float(np.median(ink)) >= ground:
        return strokes & (region >= (ground + float(ink.max())) / 2)
    return strokes & (region <= (ground + float(ink.min())) / 2)


def _rendered(
    region: np.ndarray, strokes: np.ndarray, settings: DetectorSettings, *, quiet: bool, flat_ground: bool = False
) -> bool:
    """Rendered text has one ink colour that stands well clear of its background; speckle,
    vessels and bone edges vary from pixel to pixel and sit closer to their surroundings.

    With `quiet`, how far clear is relative to the background's own noise: grey labels on a flat
    black band (ink 70-80 levels above a ground that varies by 1-3) are text as surely as white
    ones, while anatomy and speckle that far above their surroundings are never that quiet around
    it. Not in the stretched highlight view, where bone's own texture is amplified to look so.
    Anti-aliased text, whose strokes are one level only at their core, counts on such a quiet
    ground only: the core of a vessel or a bone edge is as level, but never on a flat ground.
    """
    mask = strokes > 0
    if not mask.any() or mask.all():
        return False
    level, uniform = _ink_level(region[mask], settings)
    faded = not uniform  # anti-aliased text? Its core is one ink level: judged on a quiet ground only
    if faded:
        if not quiet:
            return False
        level, uniform = _ink_level(region[_core(region, mask)], settings)
        if not uniform:
            return False
    background = region[~mask]
    contrast = abs(level - float(background.mean()))
    if contrast >= settings.min_text_contrast and not (flat_ground or faded):
        return True
    floor = settings.min_text_contrast if faded else settings.quiet_text_contrast
    if not quiet or contrast < floor:  # the background's noise need not be measured
        return False
    return contrast >= settings.quiet_background_ratio * float(background.std())


def _one_colour(region: np.ndarray, mask: np.ndarray, settings: DetectorSettings) -> bool:
    """In colour, one ink colour means every channel is uniform over the ink (`mask`): colour
    Doppler is bright in its brightest channel throughout, like white text, but its hue drifts
    from pixel to pixel."""
    return all(_ink_level(region[..., channel][mask], settings)[1] for channel in range(region.shape[-1]))


def _ink_level(ink: np.ndarray, settings: DetectorSettings) -> tuple[int, bool]:
    """The ink level (most stroke pixels lie within tolerance of it), and whether enough do.

    The level is the median of the stroke pixels in the best window, not the window's first
    position: for ink of one value every window that covers it ties, and the first lies a whole
    tolerance below it, which made grey text look 12 levels fainter than it is."""
    tolerance = settings.ink_tolerance
    counts = np.bincount(ink, minlength=256)
    near = np.convolve(counts, _window_of(tolerance), mode="same")
    best = int(near.argmax())
    low = max(0, best - tolerance)
    inside = np.cumsum(counts[low : best + tolerance + 1])
    level = low + int(np.searchsorted(inside, (inside[-1] + 1) // 2))  # the median, from the histogram
    return level, bool(near[best] >= settings.min_ink_share * ink.size)


@lru_cache(maxsize=8)
def _window_of(tolerance: int) -> np.ndarray:
    return np.ones(2 * tolerance + 1)


def merge_lines(boxes: list[Rect]) -> list[Rect]:
    """Join boxes side by side on one line (gap under a text height): words split at wide letter
    spacing are read, and masked, as a whole.

    Left to right, each box joins the first line it sits on (see `_on_one_line`), and passes
    repeat until no box joins. Lines are found through bands of rows (a box can only sit on a
    line it overlaps vertically), because speckle in ultrasound gives hundreds of boxes and
    comparing each with every line cost ~50 ms a frame.
    """
    merged = sorted(boxes, key=lambda r: r.x)
    changed = True
    while changed:
        changed = False
        lines: list[Rect] = []
        bands: dict[int, list[int]] = {}
        for box in merged:
            near = {i for band in _bands(box) for i in bands.get(band, ())}
            partner = min((i for i in near if _on_one_line(lines[i], box)), default=None)
            if partner is None:
                partner = len(lines)
                lines.append(box)
            else:
                lines[partner] = lines[partner].union(box)
                changed = True
            for band in _bands(lines[partner]):
                members = bands.setdefault(band, [])
                if partner not in members:
                    members.append(partner)
        merged = lines
    return merged


_BAND = 16  # rows


def _bands(box: Rect) -> range:
    return range(box.y // _BAND, (box.y + max(box.h, 1) - 1) // _BAND + 1)


def small_text_line(strokes: np.ndarray, box: Rect, shortest: int, tallest: int, min_letters: int) -> bool:
    """Does `box` hold a line of small letters: at least `min_letters` stroke components of one
    height (the most common, give or take a pixel) between `shortest` and `tallest`, holding most
    of its stroke pixels? Measured on the letters, not the box: a descender, or two lines run
    together, make the box taller. Anatomy, speckle and flow the detector lets through are one
    blob, or crumbs 1-2 px tall around a larger one, and do not qualify."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(strokes[box.window], connectivity=8)
    heights, areas = stats[1:count, cv2.CC_STAT_HEIGHT], stats[1:count, cv2.CC_STAT_AREA]
    sized = heights >= 2  # not dots and hyphens
    if not sized.any():
        return False
    common = int(np.bincount(heights[sized]).argmax())
    letters = sized & (np.abs(heights - common) <= 1)
    return (
        shortest <= common <= tallest
        and int(letters.sum()) >= min_letters
        and 2 * int(areas[letters].sum()) >= int(areas.sum())
    )


def spanning(boxes: list[Rect]) -> Rect:
    """The smallest box holding all of `boxes` (at least one)."""
    spanned = boxes[0]
    for box in boxes[1:]:
        spanned = spanned.union(box)
    return spanned
