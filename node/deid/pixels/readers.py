"""Whole-frame text readers behind one small interface, chosen by the pixel policy.

A reader takes one frame as the detector sees it (8-bit grey) and returns lines of text with
their boxes in frame coordinates and a confidence from 0 to 1. Two are built in:

* "rapidocr": PP-OCRv4 detection and recognition (pip rapidocr-onnxruntime, models inside the
  wheel, onnxruntime's CPU provider, one intra-op thread per worker). It finds text lines whatever
  their font or size and reads them as lines; ~0.5-2.5 s a frame on a busy 2-core machine, so it
  reads the frames the cheap detector flags and those the policy always reads.
* "tesseract": Tesseract 5 in-process (pip tesserocr, the language data of Debian's
  tesseract-ocr-eng), sparse-text mode on the frame upscaled; an independent second reading.

The search reads with one, the second look after masking with the other (pixel-policy.yaml
`readers`), so what one model cannot see does not go unnoticed by both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from node.deid.pixels.detect import Rect
from node.deid.pixels.policy import ReaderKind

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")


@dataclass(frozen=True)
class TextLine:
    rect: Rect  # in frame coordinates
    text: str
    confidence: float  # 0-1


class TextReader(Protocol):
    def read(self, frame: np.ndarray) -> list[TextLine]:
        """Lines of text on one 8-bit grey frame."""
        ...


class RapidOcrReader:
    """PP-OCRv4 through rapidocr-onnxruntime; the models are loaded once per process."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads

    def read(self, frame: np.ndarray) -> list[TextLine]:
        engine = _rapidocr(self._threads)
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame
        result, _ = engine(rgb, use_cls=False)
        rows, cols = frame.shape[:2]
        lines = []
        for points, text, score in result or []:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            x0, y0 = max(0, int(np.floor(min(xs)))), max(0, int(np.floor(min(ys))))
            x1, y1 = min(cols, int(np.ceil(max(xs)))), min(rows, int(np.ceil(max(ys))))
            if x1 > x0 and y1 > y0:
                lines.append(TextLine(Rect(x0, y0, x1 - x0, y1 - y0), str(text).strip(), float(score)))
        return lines


@lru_cache(maxsize=2)
def _rapidocr(threads: int):  # noqa: ANN202 - the engine's type lives in an optional import
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, print_verbose=False)


class TesseractReader:
    """Tesseract in-process (tesserocr): the frame upscaled towards `side` px (at most 2x: small
    frames carry small text; its cost grows with the area), dark text on a light ground, sparse
    text; one API object per process and thread, model loaded once."""

    def __init__(self, side: int = 800) -> None:
        self._side = side

    def read(self, frame: np.ndarray) -> list[TextLine]:
        from tesserocr import RIL, iterate_level

        gray = frame if frame.ndim == 2 else frame.max(axis=-1)
        if np.median(gray) < 128:
            gray = 255 - gray  # bright text on a dark frame: shown dark on light
        scale = min(2.0, max(1.0, self._side / max(gray.shape)))
        big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        api = _tesseract_api()
        rows, cols = big.shape
        api.SetImageBytes(np.ascontiguousarray(big).tobytes(), cols, rows, 1, cols)
        api.Recognize()
        lines = []
        iterator = api.GetIterator()
        if iterator is None:  # nothing on the page
            return []
        for item in iterate_level(iterator, RIL.TEXTLINE):
            try:
                text = (item.GetUTF8Text(RIL.TEXTLINE) or "").strip()
            except RuntimeError:  # tesserocr's way of saying the line is empty
                continue
            box = item.BoundingBox(RIL.TEXTLINE)
            if not text or box is None:
                continue
            x0, y0, x1, y1 = (int(round(v / scale)) for v in box)
            lines.append(TextLine(Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0)), text, item.Confidence(RIL.TEXTLINE) / 100))
        return lines


_local = threading.local()


def _tesseract_api():  # noqa: ANN202
    api = getattr(_local, "api", None)
    if api is None:
        from tesserocr import OEM, PSM, PyTessBaseAPI

        path = next((p for p in TESSDATA_DIRS if Path(p, "eng.traineddata").exists()), None)
        if path is None:
            raise RuntimeError("tesseract language data (Debian tesseract-ocr-eng) not found")
        api = PyTessBaseAPI(path=path, lang="eng", psm=PSM.SPARSE_TEXT, oem=OEM.LSTM_ONLY)
        _local.api = api
    return api


def reader_for(kind: ReaderKind, threads: int = 1) -> TextReader:
    return RapidOcrReader(threads) if kind is ReaderKind.RAPIDOCR else TesseractReader()
