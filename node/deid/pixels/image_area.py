"""Where the image proper lies in an ultrasound frame, from the instance's own declaration.

Ultrasound frames carry text (names, dates, the institution, machine settings) in the bands and
margins around the image; the Sequence of Ultrasound Regions (0018,6011) says where the image
areas are. The mask scope "all_text_outside_image" blacks out every text candidate outside them,
unread, so an OCR misread there cannot let PHI through.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from node.deid.pixels.detect import Rect

_CORNERS = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")


def ultrasound_regions(ds: Dataset, rows: int, cols: int) -> list[Rect]:
    """The declared image areas, clipped to the frame; items without all four corners are skipped
    (vendors copy regions from larger frames, so a region may reach past the frame's edge)."""
    areas = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        corners = [item.get(keyword) for keyword in _CORNERS]
        if any(value is None for value in corners):
            continue
        x0, y0, x1, y1 = (int(value) for value in corners)
        area = Rect(x0, y0, x1 - x0 + 1, y1 - y0 + 1).intersect(Rect(0, 0, cols, rows))  # max corners are inclusive
        if area.w > 0 and area.h > 0:
            areas.append(area)
    return areas


def inside_any(rect: Rect, areas: list[Rect]) -> bool:
    """Wholly inside one area: text straddling an image edge counts as outside."""
    return any(rect.intersect(area) == rect for area in areas)
