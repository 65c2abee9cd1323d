"""Synthetic instances: real pixel data from pydicom's test files, fresh UIDs, obviously fake PHI."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def synthetic_ct(patient_id: str = "FAKE-0001", name: str = "TESTPATIENT^ALPHA", birth: str = "19450101",
                 study_uid: str | None = None, series_uid: str | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = birth
    ds.OtherPatientIDs = f"{patient_id}-OTHER"
    ds.AccessionNumber = f"ACC{patient_id[-4:]}"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write_series(directory: Path, count: int, **kwargs: str) -> list[Path]:
    """`count` instances of one synthetic series, as files."""
    directory.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = synthetic_ct(study_uid=study, series_uid=series, **kwargs)
        ds.InstanceNumber = i + 1
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
