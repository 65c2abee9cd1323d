"""Synthetic DICOM images with burned-in text drawn where we know every text pixel.

Text is drawn without anti-aliasing onto a separate mask first, so a test can judge masking by
pixels: which drawn pixels changed, and how much else did. All PHI here is obviously synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "TP4821973"
BIRTH_DATE = "19700101"
STUDY_DATE = "20240131"
# How the header values are printed on the image (forms collect_header_phi knows).
TEXT_LINES = ("DOE JANE", "TP4821973", "1970-01-01", "01/31/2024")

_FONT_DIR = "/usr/share/fonts/truetype/dejavu/"
PIL_FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf")
CV_FONTS = {"simplex": cv2.FONT_HERSHEY_SIMPLEX, "plain": cv2.FONT_HERSHEY_PLAIN, "duplex": cv2.FONT_HERSHEY_DUPLEX}


@dataclass(frozen=True)
class Font:
    family: str  # a PIL font file name, or a key of CV_FONTS
    height: int  # pixel height of a capital letter, about


def text_mask(rows: int, cols: int, font: Font, lines: tuple[str, ...] = TEXT_LINES) -> np.ndarray:
    """A boolean mask of text lines drawn in the four corners."""
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # no anti-aliasing: every text pixel is either on or off
    margin = max(3, font.height // 2)
    step = round(font.height * 1.8)
    for index, line in enumerate(lines):
        width, height = _measure(line, font)
        top_left = index < len(lines) / 2  # half the lines stacked top left, half bottom right
        x = margin if top_left else cols - margin - width
        row = index if top_left else index - len(lines) // 2
        y = margin + row * step if top_left else rows - margin - height - (len(lines) // 2 - 1 - row) * step
        if font.family in CV_FONTS:
            mask = np.zeros((rows, cols), np.uint8)
            cv2.putText(mask, line, (x, y + height), CV_FONTS[font.family], _cv_scale(font), 255, 1, cv2.LINE_8)
            canvas = Image.fromarray(np.maximum(np.asarray(canvas), mask))
            draw = ImageDraw.Draw(canvas)
            draw.fontmode = "1"
        else:
            pil_font = ImageFont.truetype(_FONT_DIR + font.family, _pil_size(font))
            draw.text((x, y), line, fill=255, font=pil_font, anchor="lt")
    return np.asarray(canvas) > 0


def text_block(rows: int, cols: int, font: Font, lines: tuple[str, ...], x: int, y: int) -> np.ndarray:
    """A boolean mask of text lines (a PIL font) stacked downwards from (x, y), one place the
    corner layout of `text_mask` does not reach."""
    return _stacked(rows, cols, font, lines, x, y, smooth=False) > 0


def anti_aliased_text(rows: int, cols: int, font: Font, lines: tuple[str, ...], x: int, y: int) -> np.ndarray:
    """Text lines as a renderer with anti-aliasing draws them: each pixel's ink coverage, 0 to 1
    (edge pixels partly covered), stacked downwards from (x, y)."""
    return _stacked(rows, cols, font, lines, x, y, smooth=True) / 255.0


def _stacked(rows: int, cols: int, font: Font, lines: tuple[str, ...], x: int, y: int, *, smooth: bool) -> np.ndarray:
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)
    if not smooth:
        draw.fontmode = "1"  # every text pixel either on or off
    pil_font = ImageFont.truetype(_FONT_DIR + font.family, _pil_size(font))
    for index, line in enumerate(lines):
        draw.text((x, y + index * round(font.height * 1.9)), line, fill=255, font=pil_font, anchor="lt")
    return np.asarray(canvas)


def _cv_scale(font: Font) -> float:
    base, _ = cv2.getTextSize("H", CV_FONTS[font.family], 1.0, 1)
    return font.height / base[1]


def _pil_size(font: Font) -> int:
    return max(4, round(font.height / 0.73))  # DejaVu capitals are ~0.73 of the em size


def _measure(line: str, font: Font) -> tuple[int, int]:
    if font.family in CV_FONTS:
        (w, h), baseline = cv2.getTextSize(line, CV_FONTS[font.family], _cv_scale(font), 1)
        return w, h + baseline
    left, top, right, bottom = ImageFont.truetype(_FONT_DIR + font.family, _pil_size(font)).getbbox(line, anchor="lt")
    return right - left, bottom - top


def text_boxes_area(mask: np.ndarray) -> int:
    """Area of the union of the tight bounding boxes of each drawn text line."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(mask.astype(np.uint8), np.ones((1, 15), np.uint8)), connectivity=8
    )
    union = np.zeros(mask.shape, bool)
    for x, y, w, h, _ in stats[1:count]:
        ys, xs = np.nonzero(mask[y : y + h, x : x + w])
        union[y + ys.min() : y + ys.max() + 1, x + xs.min() : x + xs.max() + 1] = True
    return int(union.sum())


def phantom(rows: int, cols: int, low: float, high: float, seed: int) -> np.ndarray:
    """A noisy elliptical "body" in [low, high]: anatomy-like texture without text."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = ((yy - rows / 2) / (rows * 0.38)) ** 2 + ((xx - cols / 2) / (cols * 0.42)) ** 2 <= 1
    organ = ((yy - rows * 0.45) / (rows * 0.12)) ** 2 + ((xx - cols * 0.4) / (cols * 0.1)) ** 2 <= 1
    image = np.where(body, 0.45, 0.05) + np.where(organ, 0.15, 0) + rng.normal(0, 0.03, (rows, cols))
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    return low + np.clip(image, 0, 0.75) * (high - low)


def base_dataset(modality: str, burned_in: str | None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = STUDY_DATE
    ds.Manufacturer = "SYNTHETIC"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


@dataclass(frozen=True)
class Kind:
    """One way pixel data can be stored."""

    photometric: str  # MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR
    bits: int = 8  # BitsStored
    signed: bool = False

    @property
    def allocated(self) -> int:
        return 8 if self.bits <= 8 else 16


def _range(kind: Kind) -> tuple[int, int]:
    if kind.signed:
        return -(1 << (kind.bits - 1)), (1 << (kind.bits - 1)) - 1
    return 0, (1 << kind.bits) - 1


def image_dataset(
    kind: Kind, modality: str, mask: np.ndarray, *, frames: int = 1, burned_in: str | None = None
) -> Dataset:
    """A native dataset whose every frame shows `mask` as white text over a phantom."""
    rows, cols = mask.shape
    ds = base_dataset(modality, burned_in)
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = kind.allocated, kind.bits, kind.bits - 1
    ds.PixelRepresentation = int(kind.signed)
    ds.PhotometricInterpretation = kind.photometric
    if frames > 1:
        ds.NumberOfFrames = frames
    low, high = _range(kind)
    stack = []
    for seed in range(frames):
        gray = phantom(rows, cols, low, high, seed)
        if kind.photometric == "MONOCHROME1":
            gray = high + low - gray  # stored inverted: display white is the lowest value
        white = low if kind.photometric == "MONOCHROME1" else high
        stack.append(np.where(mask, white, gray))
    values = np.stack(stack)
    color = kind.photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
        values = np.repeat(values[..., np.newaxis], 3, axis=3)
        values[..., 2] = np.where(mask, values[..., 2], values[..., 2] * 0.8)  # a faint tint
    dtype = np.dtype(f"{'i' if kind.signed else 'u'}{kind.allocated // 8}")
    values = np.rint(values).astype(dtype)
    if kind.photometric == "PALETTE COLOR":
        _add_gray_palette(ds)
    ds.PixelData = _stored_bytes(values, kind)
    ds["PixelData"].VR = "OB" if kind.allocated == 8 else "OW"
    return ds


def _add_gray_palette(ds: Dataset) -> None:
    ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()
    for color in ("Red", "Green", "Blue"):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", ramp)


def _stored_bytes(values: np.ndarray, kind: Kind) -> bytes:
    if kind.photometric == "YBR_FULL":
        return convert_color_space(values, "RGB", "YBR_FULL").tobytes()
    if kind.photometric == "YBR_FULL_422":
        ybr = convert_color_space(values, "RGB", "YBR_FULL").astype(np.uint16)
        out = np.empty(values.shape[:2] + (values.shape[2] // 2, 4), np.uint8)
        out[..., 0], out[..., 1] = ybr[:, :, 0::2, 0], ybr[:, :, 1::2, 0]
        out[..., 2] = (ybr[:, :, 0::2, 1] + ybr[:, :, 1::2, 1]) // 2
        out[..., 3] = (ybr[:, :, 0::2, 2] + ybr[:, :, 1::2, 2]) // 2
        return out.tobytes()
    return values.astype(values.dtype.newbyteorder("<")).tobytes()
