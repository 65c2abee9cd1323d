"""Pixel data in and out: every frame decoded to numbers, and written back only when masked.

Decoding goes through pydicom 3 (pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE), which returns
colour as RGB whatever the stored YBR form. Writing back keeps native (uncompressed) input in its
own transfer syntax, byte order included, and re-encodes any compressed input, lossless or lossy,
as RLE Lossless: lossless for every bit depth pydicom reads, never lossy a second time. Colour is
written as RGB, PlanarConfiguration 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pack_bits, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from node.deid.part10 import declared_syntax
from node.deid.pixels.outcome import PixelCleaningError


@dataclass
class Frames:
    """All frames as (frames, rows, columns[, 3]); colour is RGB, palette colour stays indices."""

    values: np.ndarray
    photometric: str  # of `values`: MONOCHROME1/2, RGB or PALETTE COLOR

    def writable(self) -> np.ndarray:
        """The frames, to paint on: a copy the first time if they are a view of the dataset's bytes."""
        if not self.values.flags.writeable:
            self.values = self.values.copy()
        return self.values


def decode(ds: Dataset) -> Frames:
    """Every frame; native pixel data, where pydicom can, as a read-only view of the dataset's own
    bytes: most images are only looked at, and a large one is then not held twice."""
    try:
        values = pixel_array(ds, view_only=_viewable(ds))
    except Exception as exc:  # any decoder failure means we cannot look at the pixels: fail closed
        raise PixelCleaningError(f"pixel data could not be decoded ({type(exc).__name__})") from exc
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(str(ds.get("NumberOfFrames", 1) or 1))
    expected_ndim = 2 + (samples > 1)
    if values.ndim == expected_ndim:
        values = values[np.newaxis]
    if values.shape[0] != frames and frames > 1:
        raise PixelCleaningError("decoded frame count differs from NumberOfFrames")
    photometric = "RGB" if samples == 3 else str(ds.PhotometricInterpretation).strip()
    return Frames(values, photometric)


_NATIVE_LITTLE_ENDIAN = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})


def _viewable(ds: Dataset) -> bool:
    """Whether pydicom can hand the stored values over as they are (otherwise it copies, and
    warns when a view was asked for): native little endian, every allocated bit stored, bytes
    or words, no colour conversion."""
    syntax = declared_syntax(ds)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    return (
        syntax in _NATIVE_LITTLE_ENDIAN
        and bits in (8, 16, 32)
        and bits == int(ds.get("BitsStored", 0) or 0)
        and not str(ds.get("PhotometricInterpretation", "")).startswith("YBR")
    )


Span = tuple[float, float]


def _visible(frame: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    """Stored values as shown: palette indices through their lookup table, colour as RGB."""
    return apply_color_lut(frame, ds) if photometric == "PALETTE COLOR" else frame


def _brightness(values: np.ndarray) -> np.ndarray:
    """One brightness per pixel; colour uses its brightest channel, so overlay text in any colour
    (green, yellow ...) is bright."""
    if values.ndim == 3:
        return np.maximum(np.maximum(values[..., 0], values[..., 1]), values[..., 2])
    return values


def _eight_bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if values.dtype == np.uint8 and (low, high) == (0.0, 255.0):
        return values
    scaled = np.subtract(values, low, dtype=np.float32)  # in place from here: one float frame, not four
    np.multiply(scaled, 255.0 / (high - low), out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def display(
    frame: np.ndarray, photometric: str, ds: Dataset, span: Span | None
) -> tuple[np.ndarray, np.ndarray | None, Span]:
    """An 8-bit image as a viewer would show it (bright = white), for text detection and OCR;
    for colour frames also the three channels on the same scale (rendered text has one colour).

    The span (value range shown) is returned and can be passed back for the verification pass,
    so that regions the mask did not touch look exactly as before and need not be read again.
    """
    values = _visible(frame, photometric, ds)
    bright = _brightness(values)
    low, high = span if span is not None else (float(bright.min()), float(bright.max()))
    if high <= low:
        return np.zeros(bright.shape, dtype=np.uint8), None, (low, high)
    gray = _eight_bit(bright, low, high)
    colour = _eight_bit(values, low, high) if values.ndim == 3 else None
    return (255 - gray if photometric == "MONOCHROME1" else gray), colour, (low, high)


def fill_value(frames: Frames, ds: Dataset) -> np.ndarray:
    """The stored value that displays as black: a mask must look like a black box in any viewer."""
    values = frames.values
    if frames.photometric == "PALETTE COLOR":
        descriptor = ds.RedPaletteColorLookupTableDescriptor
        first = int(descriptor[1])
        entries = int(descriptor[0]) or 65536
        lut = apply_color_lut(np.arange(first, first + entries, dtype=values.dtype), ds)
        return np.asarray(first + int(lut.astype(np.int64).sum(axis=1).argmin()), dtype=values.dtype)
    if frames.photometric == "MONOCHROME1":
        return np.asarray(values.max(), dtype=values.dtype)
    if frames.photometric == "RGB":
        return np.zeros(3, dtype=values.dtype)
    return np.asarray(values.min(), dtype=values.dtype)


def write_back(ds: Dataset, frames: Frames) -> None:
    """Store masked frames in `ds`, keeping pixel attributes consistent with what is written."""
    values = frames.values if int(str(ds.get("NumberOfFrames", 1) or 1)) > 1 else frames.values[0]
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        try:
            ds.compress(RLELossless, values, generate_instance_uid=False)
        except Exception as exc:
            raise PixelCleaningError(f"masked pixels could not be re-encoded ({type(exc).__name__})") from exc
        return
    ds.PixelData = _native_bytes(values, int(ds.BitsAllocated), "<" if syntax.is_little_endian else ">")
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) <= 8 else "OW"


def _native_bytes(values: np.ndarray, bits_allocated: int, byte_order: str) -> bytes:
    if bits_allocated == 1:
        return pack_bits(values)
    data = values.astype(values.dtype.newbyteorder(byte_order), copy=False).tobytes()
    return data + b"\0" if len(data) % 2 else data
