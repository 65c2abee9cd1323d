"""Shared helpers for the metadata tests: where the config lives, and real test files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pydicom
from pydicom.data import get_testdata_file, get_testdata_files

from node.deid.metadata import MetadataReport

CONFIG = Path(__file__).resolve().parents[2] / "config"
PROFILES = CONFIG / "profiles"

Deidentify = Callable[[pydicom.Dataset], MetadataReport]


def read_test_file(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def profile_variant(directory: Path, replacements: dict[str, str], base: str = "basic.yaml") -> Path:
    """A copy of a shipped profile with some text replaced, its relative paths made absolute."""
    text = (PROFILES / base).read_text().replace("../", f"{CONFIG}/")
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = directory / "variant.yaml"
    path.write_text(text)
    return path


def valid_test_files(max_bytes: int = 2 * 1024 * 1024) -> list[Path]:
    """Every pydicom / pydicom-data test file that is a whole, writable composite instance.

    Left out: files over `max_bytes` (speed), deliberately truncated or broken files, and files
    pydicom cannot write back as they are.
    """
    chosen = []
    for name in sorted(get_testdata_files("*")):
        path = Path(name)
        if path.stat().st_size > max_bytes or "truncated" in path.name:
            continue
        try:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID  # noqa: B018 - a file without it is not an instance file
            ds.save_as(io.BytesIO(), enforce_file_format=True)
        except Exception:  # noqa: BLE001 - deliberately broken test files
            continue
        if "SOPClassUID" in ds:
            chosen.append(path)
    return chosen
