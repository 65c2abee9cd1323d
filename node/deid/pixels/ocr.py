"""Tesseract over many small crops at once: one process call reads a whole mosaic.

A tesseract call costs ~0.15 s however small the image (starting the process and loading the
model), so every region of an instance that needs reading, candidate crops and whole frames alike,
is upscaled to a readable text height, rendered as dark text on a light ground (see Crop), placed
on one white sheet, and read in a single call; word boxes are mapped back to frame coordinates.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytesseract

from node.deid.pixels.detect import Rect
from node.deid.pixels.outcome import PixelCleaningError
from node.deid.pixels.policy import OcrSettings, Rendering

_PAD = 12
_MAX_SHEET_HEIGHT = 10000


@dataclass(frozen=True)
class Word:
    text: str
    rect: Rect  # in frame coordinates
    crop: int  # index of the crop it was read in
    reading: Rendering  # which rendering of the crop it was read in: words of one reading form lines
    confidence: float = 0.0  # tesseract's, 0-100


STROKES, GREY, INVERTED = Rendering.STROKES, Rendering.GREY, Rendering.INVERTED


@dataclass(frozen=True)
class Crop:
    """A region of one frame to read, rendered for tesseract (dark text on a light ground).

    Renderings: STROKES, the stroke pixels alone (clean black-on-white text, background gone);
    GREY, the grey image with text made dark; INVERTED, the grey image the other way.
    """

    image: np.ndarray  # display grey, uint8
    strokes: np.ndarray  # 1 where a pixel is in a text-like stroke (see detect.find_text)
    origin: Rect  # where the crop sits in the frame
    readings: tuple[Rendering, ...] = (STROKES, GREY)
    scale: float | None = None  # None: upscaled so its height becomes the policy's text height

    def rendered(self, reading: Rendering) -> np.ndarray:
        if reading is STROKES:
            return (255 - 255 * self.strokes).astype(np.uint8)
        text_is_bright = bool(np.median(self.image) < 128)
        grey = 255 - self.image if text_is_bright else self.image
        return grey if reading is GREY else 255 - grey

    def scale_for(self, settings: OcrSettings) -> float:
        if self.scale is not None:
            return self.scale
        return float(min(settings.max_upscale, max(1.0, settings.target_text_height / max(1, self.origin.h))))


@dataclass(frozen=True)
class _Slot:
    crop: int
    top: int
    height: int
    scale: float
    reading: Rendering


_Piece = tuple[int, float, Rendering, np.ndarray]  # crop index, scale, reading, prepared image


def _prepared(image: np.ndarray, scale: float) -> np.ndarray:
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return image


def _sheets(crops: list[Crop], settings: OcrSettings) -> list[tuple[np.ndarray, list[_Slot]]]:
    """Stack each crop's renderings, upscaled for small text, onto sheets of bounded height.

    One piece per row: side by side, tesseract joins neighbouring pieces into one line.
    """
    pieces: list[_Piece] = []
    for index, crop in enumerate(crops):
        scale = crop.scale_for(settings)
        for reading in crop.readings:
            pieces.append((index, scale, reading, _prepared(crop.rendered(reading), scale)))
    sheets: list[tuple[np.ndarray, list[_Slot]]] = []
    batch: list[_Piece] = []
    height = 0
    for piece in pieces:
        if batch and height + piece[3].shape[0] > _MAX_SHEET_HEIGHT:
            sheets.append(_sheet(batch))
            batch, height = [], 0
        batch.append(piece)
        height += piece[3].shape[0] + 2 * _PAD
    if batch:
        sheets.append(_sheet(batch))
    return sheets


def _sheet(batch: list[_Piece]) -> tuple[np.ndarray, list[_Slot]]:
    width = max(p[3].shape[1] for p in batch) + 2 * _PAD
    sheet = np.full((sum(p[3].shape[0] + 2 * _PAD for p in batch), width), 255, dtype=np.uint8)
    slots, top = [], 0
    for index, scale, reading, image in batch:
        h, w = image.shape
        # A border in the piece's own background colour keeps tesseract's binarisation stable.
        sheet[top : top + h + 2 * _PAD, : w + 2 * _PAD] = int(np.median(image))
        sheet[top + _PAD : top + _PAD + h, _PAD : _PAD + w] = image
        slots.append(_Slot(index, top + _PAD, h, scale, reading))
        top += h + 2 * _PAD
    return sheet, slots


def tesseract_config(settings: OcrSettings) -> str:
    """Command-line options: page segmentation, LSTM only, and the policy's `-c` variables."""
    options = " ".join(f"-c {name}={value}" for name, value in sorted(settings.tesseract_options.items()))
    return f"--psm {settings.page_segmentation} --oem 1 {options}".strip()


def read_crops(crops: list[Crop], settings: OcrSettings, timeout: float) -> list[Word]:
    """OCR every crop in its renderings, one tesseract call per sheet (one sheet unless huge);
    raises PixelCleaningError on timeout or tesseract failure."""
    if not crops:
        return []
    os.environ["OMP_THREAD_LIMIT"] = "1"
    words: list[Word] = []
    config = tesseract_config(settings)
    for sheet, slots in _sheets(crops, settings):
        words.extend(_words(_tesseract(sheet, config, timeout), slots, crops, settings))
    return words


def _tesseract(sheet: np.ndarray, config: str, timeout: float) -> dict:
    """One tesseract call on an uncompressed BMP: PNG costs ~10-40 ms to encode, and leptonica
    reads PGM pixel by pixel (~20 ms on a large sheet); BMP is written and read in ~1 ms."""
    with tempfile.TemporaryDirectory(prefix="deid-ocr-") as folder:
        path = str(Path(folder) / "sheet.bmp")
        if not cv2.imwrite(path, sheet):
            raise PixelCleaningError("OCR failed (sheet not written)")
        try:
            return pytesseract.image_to_data(
                path, config=config, output_type=pytesseract.Output.DICT, timeout=max(timeout, 0.001)
            )
        except RuntimeError as exc:
            raise PixelCleaningError("OCR timed out") from exc
        except pytesseract.TesseractError as exc:
            raise PixelCleaningError("OCR failed") from exc


def _words(data: dict, slots: list[_Slot], crops: list[Crop], settings: OcrSettings) -> list[Word]:
    found = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        confidence = float(data["conf"][i])
        if not text or confidence < settings.min_confidence:
            continue
        left, top = int(data["left"][i]), int(data["top"][i])
        width, height = int(data["width"][i]), int(data["height"][i])
        centre = top + height / 2
        slot = next((s for s in slots if s.top - _PAD <= centre < s.top + s.height + _PAD), None)
        if slot is None:
            continue
        origin = crops[slot.crop].origin
        x0 = origin.x + int(np.floor((left - _PAD) / slot.scale))
        y0 = origin.y + int(np.floor((top - slot.top) / slot.scale))
        x1 = origin.x + int(np.ceil((left + width - _PAD) / slot.scale))
        y1 = origin.y + int(np.ceil((top + height - slot.top) / slot.scale))
        rect = Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0)).intersect(origin)
        found.append(Word(text, rect, slot.crop, slot.reading, confidence))
    return found
