"""Dry run: one instance through de-identification, recording nothing.

The administrator asks "what would this profile do to this study?" before pointing a scanner at
the node, and "is this quarantined image safe to release?". Both are answered by running the
real pixel and metadata steps on a copy, with pseudonyms taken from the keyed derivation alone
(no mapping row is written, nothing is forwarded), and describing only what would leave: new
values, the frames after masking with the masked boxes outlined. No original value is shown.
An imported patient map is not consulted: a dry run shows the derived pseudonym.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from node.deid.pipeline import DeidentificationError, Deidentifier
from node.deid.pixels.codec import decode, display
from node.deid.pixels.outcome import MaskedBox, PixelCleaningError
from node.deid.pseudonyms import KeyedDerivation

_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_SHOWN_CHARACTERS = 160
_OUTLINE_BGR = (255, 0, 255)  # magenta: visible on grey anatomy and on black masks alike


@dataclass(frozen=True)
class AttributeChange:
    """One attribute of the instance as it would leave: `action` is changed, removed, kept or
    added; `value` is the new value (empty for removed), never the original."""

    path: str  # e.g. "(0010,0010) PatientName" or "ReferencedSeriesSequence[0].(0020,000E) SeriesInstanceUID"
    action: str
    value: str


@dataclass(frozen=True)
class FramePicture:
    index: int
    rows: int
    columns: int
    png: bytes = field(repr=False)
    boxes: tuple[MaskedBox, ...]


@dataclass(frozen=True)
class DryRun:
    """What de-identification would forward, or why it would quarantine (`error`)."""

    error: str | None
    patient_pseudonym: str | None = None
    new_sop_instance_uid: str | None = None
    pixel_reason: str | None = None
    frames_scanned: int = 0
    ocr_frames: int = 0
    masked: tuple[MaskedBox, ...] = ()
    attributes: tuple[AttributeChange, ...] = ()
    frames: tuple[FramePicture, ...] = ()

    def counts(self) -> dict[str, int]:
        counts = {"changed": 0, "removed": 0, "kept": 0, "added": 0}
        for change in self.attributes:
            counts[change.action] += 1
        return counts

    def summary(self) -> dict[str, object]:
        """The report as JSON-ready data (PNGs are separate files)."""
        data = asdict(self)
        data["frames"] = [{"index": f.index, "rows": f.rows, "columns": f.columns, "png": frame_file_name(f.index),
                           "boxes": [asdict(b) for b in f.boxes]} for f in self.frames]
        data["counts"] = self.counts()
        return data


def dry_run(deidentifier: Deidentifier, derivation: KeyedDerivation, ds: Dataset, *, frame_limit: int) -> DryRun:
    """De-identify a copy of `ds` with the derivation as the only source of new values."""
    before = copy.deepcopy(ds)
    try:
        outcome = deidentifier.run(ds, derivation)
    except DeidentificationError as exc:
        return DryRun(error=str(exc))
    pixels = outcome.pixels
    masked = pixels.masked if pixels else ()
    try:
        frames = render_frames(ds, masked, frame_limit)
    except PixelCleaningError as exc:
        return DryRun(error=f"frames cannot be shown: {exc}")
    return DryRun(
        error=None, patient_pseudonym=outcome.patient_pseudonym, new_sop_instance_uid=outcome.new_sop_instance_uid,
        pixel_reason=pixels.reason if pixels else "pixel step off", frames_scanned=pixels.frames_scanned if pixels else 0,
        ocr_frames=pixels.ocr_frames if pixels else 0, masked=masked,
        attributes=tuple(attribute_changes(before, ds)), frames=frames,
    )


def attribute_changes(before: Dataset, after: Dataset) -> Iterator[AttributeChange]:
    """Every attribute of `after` as changed, kept or added, and every one of `before` that is
    gone as removed; values shown are `after`'s only."""
    old = dict(_leaves(before, ""))
    new = dict(_leaves(after, ""))
    for path, value in new.items():
        if path not in old:
            yield AttributeChange(path, "added", value)
        else:
            yield AttributeChange(path, "kept" if old[path] == value else "changed", value)
    for path in old:
        if path not in new:
            yield AttributeChange(path, "removed", "")


def _leaves(ds: Dataset, prefix: str) -> Iterator[tuple[str, str]]:
    for element in ds:
        path = f"{prefix}{_tag_name(element)}"
        if element.VR == "SQ":
            items = element.value or []
            yield path, f"{len(items)} item(s)"
            for index, item in enumerate(items):
                yield from _leaves(item, f"{path}[{index}].")
        else:
            yield path, _shown(element)


def _tag_name(element: DataElement) -> str:
    tag = f"({element.tag.group:04X},{element.tag.element:04X})"
    keyword = element.keyword or ("private" if element.tag.is_private else "")
    return f"{tag} {keyword}".rstrip()


def _shown(element: DataElement) -> str:
    if element.VR in _BINARY_VRS or isinstance(element.value, (bytes, bytearray)):
        return f"{len(element.value or b'')} bytes"
    text = str(element.value)
    return text if len(text) <= _SHOWN_CHARACTERS else text[:_SHOWN_CHARACTERS] + "..."


def render_frames(ds: Dataset, masked: tuple[MaskedBox, ...], limit: int) -> tuple[FramePicture, ...]:
    """The frames as they would leave (already masked in `ds`), as PNGs with each masked box
    outlined; at most `limit`, spread over the instance."""
    if "PixelData" not in ds or limit <= 0:
        return ()
    frames = decode(ds)
    count, rows, columns = frames.values.shape[:3]
    pictures = []
    for index in _spread(count, limit):
        gray, colour, _ = display(frames.values[index], frames.photometric, ds, None)
        image = cv2.cvtColor(colour, cv2.COLOR_RGB2BGR) if colour is not None else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        boxes = tuple(b for b in masked if b.on(index))
        for box in boxes:  # drawn just outside the box: the black inside stays visible
            cv2.rectangle(image, (max(0, box.x - 1), max(0, box.y - 1)),
                          (min(columns - 1, box.x + box.w), min(rows - 1, box.y + box.h)), _OUTLINE_BGR, 1)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(image))
        if not ok:
            raise PixelCleaningError("frame could not be encoded as PNG")
        pictures.append(FramePicture(index, rows, columns, png.tobytes(), boxes))
    return tuple(pictures)


def _spread(count: int, limit: int) -> list[int]:
    if count <= limit:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, num=limit).round().astype(int).tolist()))


def frame_file_name(index: int) -> str:
    return f"frame-{index:04d}.png"
