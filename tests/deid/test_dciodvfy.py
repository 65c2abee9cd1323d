"""De-identified output is as valid as its input: dciodvfy (dicom3tools) finds no new error."""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
import subprocess
from pathlib import Path

import pydicom
import pytest

from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation
from tests.deid.samples import PROFILES, valid_test_files

_NUMBERS = re.compile(r"\b\d+(?:\.\d+)*\b")

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")


@lru_cache(maxsize=None)
def dciodvfy_errors(path: Path) -> frozenset[str]:
    """Error lines, with UIDs and numbers blanked so that a remapped UID is the same error."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    return frozenset(
        _NUMBERS.sub("<n>", line.strip()) for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")
    )


@pytest.mark.parametrize("profile_name", ["basic", "tcia"])
def test_output_has_no_dciodvfy_error_the_input_did_not_have(profile_name: str, tmp_path: Path) -> None:
    deidentifier = MetadataDeidentifier(load_profile(PROFILES / f"{profile_name}.yaml"))
    mappings = DerivedMappings(KeyedDerivation(secret=b"test-secret"))
    sources = valid_test_files()
    outputs = []
    for source in sources:
        ds = pydicom.dcmread(source)
        deidentifier.apply(ds, mappings, collect_header_phi(ds))
        outputs.append(tmp_path / source.name)
        ds.save_as(outputs[-1], enforce_file_format=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        before = list(pool.map(dciodvfy_errors, sources))
        after = list(pool.map(dciodvfy_errors, outputs))
    new_errors = {s.name: sorted(a - b) for s, b, a in zip(sources, before, after) if a - b}
    assert len(sources) > 100
    assert not new_errors, new_errors
