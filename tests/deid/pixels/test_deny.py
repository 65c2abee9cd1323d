"""Deny by default: burned-in text goes, line by line, unless all it says is known to be safe.

Held-out failures this guards against: a PHI line masked word by word with the first name and the
birth date left readable; labelled text whose values are not the header's ("Name: SMITH JOHN") kept
as "no phi"; a region rule about an overlay blacking out text-free pixel data. Judged by the drawn
strokes (>= 99% of them changed), never by OCR; fonts other than the detector was tuned on
(Debian fonts-liberation, fonts-freefont-ttf). All names, IDs and dates are synthetic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from node.deid.pixels import PixelCleaningError
from node.deid.pixels.policy import load_policy
from tests.deid.pixels.conftest import POLICY, Clean
from tests.deid.pixels.judge import changed_pixels, decoded
from tests.deid.pixels.synthetic import Kind, image_dataset, phantom

FONTS = {
    "liberation-sans": "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "liberation-serif-bold": "/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf",
    "free-mono": "/usr/share/fonts/truetype/freefont/FreeMono.ttf",
}
# Where the search leaves strokes of this layout, the second look reads a label or PHI and the
# instance is quarantined (measured: FreeMono 13 px, 98.4% of its strokes masked). Not a leak, but a
# loss to the research copy; listed so a change either way shows.
QUARANTINED = {"free-mono"}
Placed = tuple[str, int, int]  # text, x, y (top left); x = -1: centred


def _drawn(rows: int, cols: int, font: str, size: int, lines: tuple[Placed, ...]) -> np.ndarray:
    """The drawn text as a mask, without anti-aliasing: every stroke pixel is known."""
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"
    face = ImageFont.truetype(font, size)
    for text, x, y in lines:
        if x < 0:
            left, _, right, _ = face.getbbox(text, anchor="lt")
            x = (cols - (right - left)) // 2
        draw.text((x, y), text, fill=255, font=face, anchor="lt")
    return np.asarray(canvas) > 0


def _masked_share(clean: Clean, ds: pydicom.Dataset, strokes: np.ndarray) -> float:
    before = decoded(ds)
    clean(ds)
    return float(min(frame[strokes].mean() for frame in changed_pixels(before, decoded(ds))))


@pytest.mark.parametrize("font", sorted(FONTS))
def test_labelled_lines_whose_values_are_not_the_headers_go_whole(clean: Clean, font: str) -> None:
    """Third-party layout: `Key: value` lines near the top left, none of the values in the header."""
    lines = (("Name: SMITH JOHN", 6, 6), ("DOB: 12/20/1910", 6, 24), ("Patient ID: 5550123", 6, 42),
             ("Institution Name: ACME GENERAL", 6, 60), ("Age: 071Y", 6, 78))
    strokes = _drawn(320, 320, FONTS[font], 13, lines)
    ds = image_dataset(Kind("MONOCHROME2", 12), "MR", strokes)
    try:
        assert _masked_share(clean, ds, strokes) >= 0.99
    except PixelCleaningError as error:  # what the search left, the second look read: quarantined
        assert font in QUARANTINED and "verification" in str(error)


def test_a_phi_line_goes_whole_first_name_and_birth_date_too(clean: Clean) -> None:
    """Synthetic A: `LAST FIRST M MM.DD.YYYY` and `DOB: MM.DD.YYYY` top left; only the family name is
    the header's (DOE^JANE), the first name and the dates are not."""
    lines = (("DOE MARGARET M 03.14.1962", 6, 6), ("DOB: 03.14.1962", 6, 24))
    strokes = _drawn(256, 256, FONTS["liberation-sans"], 12, lines)
    ds = image_dataset(Kind("MONOCHROME2", 16, signed=True), "CT", strokes)
    assert _masked_share(clean, ds, strokes) >= 0.99


def test_bottom_right_identity_lines_and_a_centred_banner_go(clean: Clean) -> None:
    """Synthetic B (`First Last  ID nnnnnnn` / `DOB yyyy-mm-dd` bottom right) and an institution
    banner centred on top, on a colour secondary capture (read whole)."""
    lines = (("ACME VALLEY HOSPITAL", -1, 6), ("Walter Quince  ID 7302116", 150, 262), ("DOB 1948-07-02", 232, 282))
    strokes = _drawn(300, 400, FONTS["free-mono"], 14, lines)
    ds = image_dataset(Kind("RGB", 8), "OT", strokes)
    assert _masked_share(clean, ds, strokes) >= 0.99


def test_inverse_video_label_goes(clean: Clean) -> None:
    """Dark text printed on a light band in a dark frame."""
    strokes = _drawn(256, 256, FONTS["liberation-sans"], 12, (("Name: ROE RICHARD 04.02.1950", 8, 8),))
    ds = image_dataset(Kind("MONOCHROME2", 12), "CR", np.zeros((256, 256), bool))
    values = ds.pixel_array.copy()
    values[2:26, :] = 4095
    values[strokes] = 0
    ds.PixelData = values.astype(np.uint16).tobytes()
    # Black ink under a black mask does not change: judge the light ground between the strokes.
    ground = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~strokes
    assert _masked_share(clean, ds, ground) >= 0.99


def _overlay_object(text: np.ndarray | None) -> pydicom.Dataset:
    """A text-free MR (or one with a top banner) that carries the Siemens overlay object's
    signature, whose CTP rule blacks out the top 90 rows of a 512-wide frame."""
    mask = np.zeros((256, 512), bool) if text is None else text
    ds = image_dataset(Kind("MONOCHROME2", 12), "MR", mask)
    if text is None:
        ds.PixelData = np.rint(phantom(256, 512, 0, 4095, 3)).astype(np.uint16).tobytes()
    ds.add_new(0x60000022, "LO", "Siemens MedCom Object Graphics")
    return ds


def test_region_rule_about_an_overlay_leaves_text_free_pixels_alone(clean: Clean) -> None:
    ds = _overlay_object(None)
    before = hashlib.md5(ds.PixelData).hexdigest()
    outcome = clean(ds)
    assert not outcome.redacted and hashlib.md5(ds.PixelData).hexdigest() == before


def test_region_rule_applies_where_its_box_holds_text(clean: Clean) -> None:
    strokes = _drawn(256, 512, FONTS["liberation-sans"], 12, (("ZZ 41 QX 7 RR", 200, 20),))
    ds = _overlay_object(strokes)
    before = decoded(ds)
    outcome = clean(ds)
    box = decoded(ds)[0][:90, :]
    assert "region rule" in outcome.reason and box.min() == box.max()  # the rule's whole box, one fill
    assert changed_pixels(before, decoded(ds))[0][strokes].all()


@pytest.fixture(scope="module")
def vocabulary():
    return load_policy(POLICY).vocabulary


@pytest.mark.parametrize(
    ("text", "modality"),
    [("AXIAL", "CT"), ("120 KV", "CT"), ("W:400 L:40", "CT"), ("TIS<0.4 MI=0.8 AO=100%", "US"), ("GEN 5.0 MHZ", "US"),
     ("R", "MG"), ("T2 FLAIR TE=90MS", "MR")],
)
def test_annotations_of_the_vocabulary_are_safe(vocabulary, text: str, modality: str) -> None:
    assert vocabulary.safe_line(text, modality) and not vocabulary.labelled(text)


@pytest.mark.parametrize(
    "text",
    ["Name: SMITH JOHN", "DOB:12/20/1910", "Patient ID", "Institution Name: X", "Age: 45", "Study Date: 2021-03-04",
     "ACC# 88123"],
)
def test_a_label_marks_its_line(vocabulary, text: str) -> None:
    assert vocabulary.labelled(text) and not vocabulary.safe_line(text, "CT")


@pytest.mark.parametrize("text", ["SMITH JOHN", "01.02.1970", "1970-01-02", "01-02-70", "4821973", "BAPTIST MED CTR", ""])
def test_what_is_not_known_is_not_safe(vocabulary, text: str) -> None:
    assert not vocabulary.safe_line(text, "US")


def test_policy_without_a_vocabulary_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pixel-policy.yaml"
    path.write_text("default: {action: detect, mask: deny}\n")
    assert not load_policy(path).vocabulary.safe_line("AXIAL", "CT")
