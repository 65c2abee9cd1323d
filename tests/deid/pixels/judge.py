"""Judging masks by pixels, and by an independent OCR read of the result."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pydicom
import pytesseract
from pydicom.pixels import apply_color_lut
from rapidfuzz import fuzz


def decoded(ds: pydicom.Dataset) -> np.ndarray:
    """All frames as (frames, rows, cols[, samples]), colour as RGB."""
    values = ds.pixel_array
    single = values.ndim == 2 + (int(ds.SamplesPerPixel) > 1)
    return values[np.newaxis] if single else values


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per frame and pixel: did any sample change?"""
    diff = before != after
    return diff.any(axis=-1) if diff.ndim == 4 else diff


def ocr_text(gray: np.ndarray) -> str:
    """Upscaled, both polarities: what a careful reader would still find."""
    os.environ["OMP_THREAD_LIMIT"] = "1"
    big = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return " ".join(pytesseract.image_to_string(img, config="--psm 11") for img in (big, 255 - big)).upper()


def found_tokens(text: str, tokens: list[str], threshold: float = 85) -> list[str]:
    """Tokens the OCR text still contains, allowing for misreads."""
    return [t for t in tokens if fuzz.partial_ratio(t.upper(), text) >= threshold]


def shown(ds: pydicom.Dataset, frame: np.ndarray) -> np.ndarray:
    """One decoded frame as 8-bit brightness (palette through its table, colour by its brightest channel)."""
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        frame = frame >> 8 if frame.max() > 255 else frame
    return frame.max(axis=-1).astype(np.uint8) if frame.ndim == 3 else frame.astype(np.uint8)


def printed_text(ds: pydicom.Dataset, frame: np.ndarray, box: tuple[int, int, int, int], lift: int = 80) -> np.ndarray:
    """The printed text inside a known box (x, y, w, h): pixels much brighter than the box's background."""
    x, y, w, h = box
    gray = shown(ds, frame)[y : y + h, x : x + w].astype(int)
    mask = np.zeros(frame.shape[:2], bool)
    mask[y : y + h, x : x + w] = gray >= np.median(gray) + lift
    return mask
