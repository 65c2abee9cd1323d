"""Real DICOM files from pydicom's test data (and pydicom-data), chosen for network tests."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import UID, generate_uid
from pynetdicom import AllStoragePresentationContexts

STORAGE_CLASSES = {str(c.abstract_syntax) for c in AllStoragePresentationContexts}
RETIRED_ULTRASOUND = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired): not in that list
# Large files that would only slow the suite down without adding a case.
_TOO_BIG = 8 * 1024 * 1024


def _readable(path: Path) -> pydicom.Dataset | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ds.file_meta.TransferSyntaxUID  # noqa: B018
        if any(k in ds and ds.get_item(k).VR == "UN" for k in ("SOPClassUID", "SOPInstanceUID")):
            return None  # mis-encoded as UN: a sender cannot read its own identity
    except Exception:  # noqa: BLE001 - deliberately broken test files
        return None
    return ds


def _pixels_valid(path: Path) -> bool:
    """Pixel data a modality could have produced: even length, and decodable.

    pydicom's test set includes deliberately damaged files (e.g. a corrupt JPEG); the node
    quarantines those (tests/test_bad_input.py), so they do not belong in a delivery test.
    """
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        return True
    if ds["PixelData"].is_undefined_length is False and len(ds.PixelData) % 2:
        return False
    try:
        ds.pixel_array  # noqa: B018
    except Exception:  # noqa: BLE001
        return False
    return True


@lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[Path, str, str, bool], ...]:
    """(path, SOPInstanceUID, transfer syntax, multi-frame) of every file a modality could send."""
    found = []
    for name in sorted(get_testdata_files("*.dcm")):
        path = Path(name)
        if path.stat().st_size > _TOO_BIG:
            continue
        ds = _readable(path)
        if ds is None or str(ds.get("SOPClassUID", "")) not in STORAGE_CLASSES:
            continue
        uids = [str(ds.get(k, "")) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        if not all(uids) or str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")) != uids[0]:
            continue
        if not _pixels_valid(path):
            continue
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        found.append((path, uids[0], str(ds.file_meta.TransferSyntaxUID), frames > 1))
    return tuple(found)


def network_corpus(count: int = 36, include: tuple[Path, ...] = ()) -> list[Path]:
    """At least `count` files with distinct instance UIDs: every transfer syntax found, multi-frame
    files, several patients, and the files in `include` (others with their UIDs are left out)."""
    chosen: list[Path] = list(include)
    seen_uids: set[str] = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in include}
    seen_syntaxes: set[str] = set()
    candidates = _candidates()
    frequency = Counter(syntax for _, _, syntax, _ in candidates)
    rarest_first = sorted(candidates, key=lambda c: frequency[c[2]])
    for path, uid, syntax, multiframe in rarest_first:  # first: one of each syntax, and multi-frame
        if uid not in seen_uids and (syntax not in seen_syntaxes or multiframe):
            chosen.append(path)
            seen_uids.add(uid)
            seen_syntaxes.add(syntax)
    for path, uid, _, _ in candidates:
        if len(chosen) >= count:
            break
        if uid not in seen_uids:
            chosen.append(path)
            seen_uids.add(uid)
    return chosen


def multiframe_ultrasound_with_text() -> Path:
    """Philips CX50, two frames, patient name, ID, institution and date burned into the top 59 rows."""
    return Path(get_testdata_file("OBXXXX1A_2frame.dcm"))


def ct_stored_as(directory: Path, sop_class: str) -> Path:
    """CT_small re-labelled as another SOP class (file meta too), under a fresh instance UID: an
    instance of a class no test file has (a retired one, a vendor's private one)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = directory / f"{sop_class}.dcm"
    ds.save_as(path)
    return path


def is_registered(uid: str) -> bool:
    """A UID of the standard (SOP class, transfer syntax, coding scheme): never replaced."""
    return UID(uid).is_valid and UID(uid).name != uid
