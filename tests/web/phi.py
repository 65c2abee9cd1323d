"""Obviously fake PHI sent to the node, and the search for it in everything the window shows."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.deid.pixels.synthetic import Font, Kind, image_dataset, text_mask
from tests.synthetic import synthetic_ct

CT_PATIENT_ID = "FAKEPID-7Q3X"
CT_NAME = "ZZTESTNAME^QWERTYFAKE"
CT_BIRTH = "19450317"


def write_cts(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        ds = synthetic_ct(patient_id=CT_PATIENT_ID, name=CT_NAME, birth=CT_BIRTH)
        ds.InstanceNumber = number + 1
        path = directory / f"ct-{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_burned_in(path: Path) -> tuple[Path, "object"]:
    """A secondary capture with the patient's name, id and dates burned in, and the text's mask."""
    mask = text_mask(256, 256, Font("DejaVuSans.ttf", 12))
    ds = image_dataset(Kind("MONOCHROME2"), "OT", mask)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()  # a PACS files it by these
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, mask


def phi_strings(files: list[Path]) -> set[str]:
    """Every identifying value of `files`: names (and their parts), ids, dates, original UIDs."""
    found: set[str] = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
                        "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            if value:
                found.add(value)
                found.update(part for part in value.replace("^", " ").split() if len(part) >= 4)
    return found


def leaks(text: str, phi: set[str]) -> list[str]:
    upper = text.upper()
    return sorted(value for value in phi if value.upper() in upper)
