"""Fixtures for the pixel step: the shipped policy, and a way to run it on a dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from node.deid.phi import collect_header_phi
from node.deid.pixels import PixelCleaner, PixelOutcome

POLICY = Path(__file__).resolve().parents[3] / "config" / "pixel-policy.yaml"

Clean = Callable[[pydicom.Dataset], PixelOutcome]


@pytest.fixture(scope="session")
def cleaner() -> PixelCleaner:
    return PixelCleaner.from_policy_file(POLICY)


@pytest.fixture
def clean(cleaner: PixelCleaner) -> Clean:
    """Run the pixel step as the worker does: PHI collected from the header as received."""

    def run(ds: pydicom.Dataset) -> PixelOutcome:
        return cleaner.clean(ds, collect_header_phi(ds))

    cleaner.forget_readings()  # each test reads its images afresh, whatever ran before it
    return run
