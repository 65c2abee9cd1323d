"""Tesseract over many small crops at once: one process call reads a whole mosaic.

A tesseract call costs ~0.15 s however small the image, so every candidate region of an instance
is upscaled to a readable text height, rendered as dark text on a light ground (see Crop),
placed on one white sheet, and read in a single call; word boxes are mapped back to frame coordinates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import pytesseract

from node.deid.pixels.detect import Rect
from node.deid.pixels.outcome import PixelCleaningError
from node.deid.pixels.policy import OcrSettings

_PAD = 12
_MAX_SHEET_HEIGHT = 6000
_CONFIG = "--psm 11 --oem 1"


@dataclass(frozen=True)
class Word:
    text: str
    rect: Rect  # in frame coordinates
    crop: int  # index of the crop it was read in
    reading: int  # which rendering of the crops it was read in (see Crop): one reading of the frame


STROKES, GREY, INVERTED = 0, 1, 2
REGION_READINGS = (STROKES, GREY)
ALL_READINGS = (STROKES, GREY, INVERTED)


@dataclass(frozen=True)
class Crop:
    """A region of one frame to read, rendered for tesseract (dark text on a light ground).

    Readings: STROKES, the stroke pixels alone (clean black-on-white text, background gone);
    GREY, the grey image with text made dark; INVERTED, the grey image the other way.
    """

    image: np.ndarray  # display grey, uint8
    strokes: np.ndarray  # 1 where a pixel is in a text-like stroke (see detect.find_text)
    origin: Rect  # where the crop sits in the frame

    def renderings(self, readings: tuple[int, ...]) -> list[tuple[int, np.ndarray]]:
        text_is_bright = bool(np.median(self.image) < 128)
        grey = 255 - self.image if text_is_bright else self.image
        images = {STROKES: lambda: (255 - 255 * self.strokes).astype(np.uint8), GREY: lambda: grey,
                  INVERTED: lambda: 255 - grey}
        return [(reading, images[reading]()) for reading in readings]


@dataclass(frozen=True)
class _Slot:
    crop: int
    top: int
    height: int
    scale: float
    reading: int


_Piece = tuple[int, float, int, np.ndarray]  # crop index, scale, reading, prepared image


def _prepared(image: np.ndarray, scale: float) -> np.ndarray:
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return image


def _sheets(crops: list[Crop], settings: OcrSettings, readings: tuple[int, ...]) -> list[tuple[np.ndarray, list[_Slot]]]:
    """Stack each crop's renderings, upscaled for small text, onto sheets of bounded height.

    One piece per row: side by side, tesseract joins neighbouring pieces into one line.
    """
    pieces: list[_Piece] = []
    for index, crop in enumerate(crops):
        scale = float(min(settings.max_upscale, max(1.0, settings.target_text_height / max(1, crop.origin.h))))
        for reading, image in crop.renderings(readings):
            pieces.append((index, scale, reading, _prepared(image, scale)))
    sheets: list[tuple[np.ndarray, list[_Slot]]] = []
    batch: list[_Piece] = []
    for piece in pieces:
        if batch and sum(p[3].shape[0] + 2 * _PAD for p in batch) + piece[3].shape[0] > _MAX_SHEET_HEIGHT:
            sheets.append(_sheet(batch))
            batch = []
        batch.append(piece)
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


def read_crops(
    crops: list[Crop], settings: OcrSettings, timeout: float, *, readings: tuple[int, ...] = REGION_READINGS
) -> list[Word]:
    """OCR every crop; raises PixelCleaningError on timeout or tesseract failure."""
    if not crops:
        return []
    os.environ["OMP_THREAD_LIMIT"] = "1"
    words: list[Word] = []
    for sheet, slots in _sheets(crops, settings, readings):
        try:
            data = pytesseract.image_to_data(
                sheet, config=_CONFIG, output_type=pytesseract.Output.DICT, timeout=max(timeout, 0.001)
            )
        except RuntimeError as exc:
            raise PixelCleaningError("OCR timed out") from exc
        except pytesseract.TesseractError as exc:
            raise PixelCleaningError("OCR failed") from exc
        words.extend(_words(data, slots, crops, settings))
    return words


def _words(data: dict, slots: list[_Slot], crops: list[Crop], settings: OcrSettings) -> list[Word]:
    found = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        if not text or float(data["conf"][i]) < settings.min_confidence:
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
        found.append(Word(text, rect, slot.crop, slot.reading))
    return found
