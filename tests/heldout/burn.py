"""Burned-in text drawn into pixel data, with the exact mask of the pixels each PHI item changed.

Each piece of text is rendered on a blank layer (PIL, TrueType fonts) and composited onto the
frame; the item's ground truth is the set of pixels whose value the composite changed, so the
scorer judges hiding by the strokes themselves, never by OCR. Layouts are this package's own:
labelled lines in a corner, a centred banner, vertical text in a margin, an inverse-video box,
outlined text over the anatomy, an unlabelled stack at a side edge.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Debian fonts-dejavu-core, fonts-liberation, fonts-freefont-ttf (scripts/install-system.sh).
FONT_FILES = (
    "dejavu/DejaVuSans.ttf", "dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    "liberation/LiberationSans-Regular.ttf", "liberation/LiberationMono-Regular.ttf",
    "liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSansNarrow-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "freefont/FreeSans.ttf", "freefont/FreeMono.ttf", "freefont/FreeSerif.ttf", "freefont/FreeSansBold.ttf",
)
FONT_ROOT = Path("/usr/share/fonts/truetype")

LAYOUTS = ("corner_labels", "banner", "margin_vertical", "inverse_box", "outlined", "side_stack")

# Labels of this package's own, several languages; the label is not PHI, only the value after it.
LABELS = {
    "name": ("Pt", "Patient", "Naam", "Nom", "Paciente", "Pat.", "Paz."),
    "birth": ("Born", "Geb.", "D.o.B.", "Né(e)", "F.nac.", "Nato il"),
    "id": ("MRN", "Hosp#", "PID", "Pat-Nr", "NHS No", "Dossier", "Cartella"),
    "exam_date": ("Exam", "Acq", "Datum", "Scan", "Data esame"),
    "institution": ("Site", "Hosp", "Klinik", "Centre"),
    "accession": ("Acc", "Order#", "Auftrag", "Req"),
    "referrer": ("Ref", "Verwijzer", "Ref. Dr", "Médecin"),
    "phone": ("Tel", "Ph", "Tél."),
}


def fonts() -> tuple[Path, ...]:
    """The installed fonts of FONT_FILES, in a fixed order (the corpus depends on it)."""
    found = tuple(FONT_ROOT / f for f in FONT_FILES if (FONT_ROOT / f).is_file())
    if not found:
        raise RuntimeError(f"no TrueType fonts under {FONT_ROOT}; run scripts/install-system.sh")
    return found


@cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@dataclass(frozen=True)
class Segment:
    text: str
    kind: str | None  # the PHI class ("name", "birth", ...) or None for labels and harmless text


@dataclass(frozen=True)
class Style:
    font: Path
    size: int
    anti_aliased: bool
    outline: bool = False
    vertical: bool = False


@dataclass
class Drawn:
    """One PHI item as drawn: its class, layout, and the mask of the pixels its strokes changed."""

    kind: str
    layout: str
    top: int
    left: int
    mask: np.ndarray  # bool, cropped to the item's bounding box

    def as_json(self) -> dict[str, object]:
        height, width = self.mask.shape
        packed = np.packbits(self.mask.reshape(-1))
        return {"kind": self.kind, "layout": self.layout, "box": [self.top, self.left, height, width],
                "mask": base64.b64encode(packed.tobytes()).decode("ascii"), "pixels": int(self.mask.sum())}


def mask_from_json(item: dict) -> tuple[tuple[int, int, int, int], np.ndarray]:  # type: ignore[type-arg]
    top, left, height, width = item["box"]
    bits = np.unpackbits(np.frombuffer(base64.b64decode(item["mask"]), dtype=np.uint8))[: height * width]
    return (top, left, height, width), bits.reshape(height, width).astype(bool)


@dataclass
class Canvas:
    """A frame (2-D grey or H x W x 3 RGB, integer) being drawn on: what is taken, what was drawn."""

    frame: np.ndarray
    occupied: list[tuple[int, int, int, int]] = field(default_factory=list)
    items: list[Drawn] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.frame.shape[0])

    @property
    def width(self) -> int:
        return int(self.frame.shape[1])

    def free(self, top: int, left: int, height: int, width: int) -> bool:
        if top < 0 or left < 0 or top + height > self.height or left + width > self.width:
            return False
        return not any(top < t + h + 2 and t < top + height + 2 and left < l + w + 2 and l < left + width + 2
                       for t, l, h, w in self.occupied)

    def composite(self, alpha: np.ndarray, top: int, left: int, ink: np.ndarray | int, changed: np.ndarray) -> None:
        """Blend `ink` into the frame through `alpha` (0..255), clipped to the frame; marks what changed."""
        alpha = alpha[: max(0, self.height - top), : max(0, self.width - left)]
        height, width = alpha.shape
        region = self.frame[top:top + height, left:left + width]
        a = alpha.astype(np.float64) / 255.0
        if region.ndim == 3:
            a = a[..., None]
        blended = np.rint(region * (1.0 - a) + np.asarray(ink, dtype=np.float64) * a).astype(region.dtype)
        differs = blended != region
        changed[top:top + height, left:left + width] |= differs.any(axis=2) if differs.ndim == 3 else differs
        region[...] = blended


def _layer(text: str, style: Style, *, stroke: int = 0) -> np.ndarray:
    """The text's alpha on a blank layer, tight to its ink (transposed for vertical text)."""
    font = _font(style.font, style.size)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "L" if style.anti_aliased else "1"
    draw.text((1 - left, 1 - top), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    if style.vertical:
        image = image.transpose(Image.Transpose.ROTATE_90)
    return np.asarray(image)


def _line_extent(segments: list[Segment], style: Style) -> tuple[int, int]:
    """(height, width) a line of segments takes on the frame."""
    font = _font(style.font, style.size)
    along = sum(int(font.getlength(s.text)) + _gap(style) for s in segments) + 4
    across = int(style.size * 1.35) + 6
    return (across, along) if not style.vertical else (along, across)


def _gap(style: Style) -> int:
    return max(4, style.size // 2)


def draw_line(canvas: Canvas, segments: list[Segment], style: Style, top: int, left: int, layout: str,
              ink: np.ndarray | int, outline_ink: np.ndarray | int | None = None) -> None:
    """Draw segments one after another along a line (downwards when vertical); PHI ones are recorded."""
    font = _font(style.font, style.size)
    along = 2
    for segment in segments:
        y, x = (top + 2, left + along) if not style.vertical else (top + along, left + 2)
        changed = np.zeros(canvas.frame.shape[:2], dtype=bool)
        if style.outline and outline_ink is not None:
            halo = _layer(segment.text, style, stroke=1)
            canvas.composite(halo, y, x, outline_ink, changed)
            y, x = y + 1, x + 1  # the halo is one pixel wider on each side
        canvas.composite(_layer(segment.text, style), y, x, ink, changed)
        along += int(font.getlength(segment.text)) + _gap(style)
        if segment.kind is not None and changed.any():
            rows, cols = np.nonzero(changed)
            t, l = int(rows.min()), int(cols.min())
            crop = changed[t:int(rows.max()) + 1, l:int(cols.max()) + 1]
            canvas.items.append(Drawn(segment.kind, layout, t, l, crop.copy()))
    canvas.occupied.append((top, left, *_line_extent(segments, style)))


def block_size(lines: list[list[Segment]], style: Style) -> tuple[int, int]:
    """(height, width) of lines stacked downwards (side by side when vertical)."""
    sizes = [_line_extent(line, style) for line in lines]
    if style.vertical:
        return max(h for h, _ in sizes), sum(w for _, w in sizes)
    return sum(h for h, _ in sizes), max(w for _, w in sizes)


def draw_block(canvas: Canvas, lines: list[list[Segment]], style: Style, top: int, left: int, layout: str,
               ink: np.ndarray | int, outline_ink: np.ndarray | int | None = None) -> None:
    offset = 0
    for line in lines:
        height, width = _line_extent(line, style)
        if style.vertical:
            draw_line(canvas, line, style, top, left + offset, layout, ink, outline_ink)
            offset += width
        else:
            draw_line(canvas, line, style, top + offset, left, layout, ink, outline_ink)
            offset += height


def place(canvas: Canvas, height: int, width: int, where: str, nudge: tuple[int, int] = (0, 0)) -> tuple[int, int] | None:
    """A free spot for a block of this size in a named part of the frame (moved by `nudge`), or None."""
    margin = max(2, canvas.width // 60)
    spots = {
        "top_left": (margin, margin), "top_right": (margin, canvas.width - width - margin),
        "bottom_left": (canvas.height - height - margin, margin),
        "bottom_right": (canvas.height - height - margin, canvas.width - width - margin),
        "top_centre": (margin, (canvas.width - width) // 2),
        "bottom_centre": (canvas.height - height - margin, (canvas.width - width) // 2),
        "left_edge": ((canvas.height - height) // 2, margin),
        "right_edge": ((canvas.height - height) // 2, canvas.width - width - margin),
        "lower_third": (canvas.height * 2 // 3, (canvas.width - width) // 2),
    }
    top, left = spots[where]
    top, left = top + nudge[0], left + nudge[1]
    return (top, left) if canvas.free(top, left, height, width) else None


def fill_box(canvas: Canvas, top: int, left: int, height: int, width: int, ink: np.ndarray | int) -> None:
    canvas.frame[top:top + height, left:left + width] = ink
    canvas.occupied.append((top, left, height, width))
