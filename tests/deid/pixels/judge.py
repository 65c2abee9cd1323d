"""Judging masks by pixels, and by an independent OCR read of the result."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pydicom
import pytesseract
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
