"""Fixtures for the metadata de-identification tests: real profiles, real derivation, real files."""

from __future__ import annotations

import pydicom
import pytest

from node.deid.metadata import MetadataDeidentifier, MetadataReport
from node.deid.phi import collect_header_phi
from node.deid.profile import Profile, load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation
from tests.deid.samples import PROFILES, Deidentify


@pytest.fixture(scope="session")
def basic_profile() -> Profile:
    return load_profile(PROFILES / "basic.yaml")


@pytest.fixture
def mappings() -> DerivedMappings:
    return DerivedMappings(KeyedDerivation(secret=b"test-secret"))


@pytest.fixture
def deidentify(basic_profile: Profile, mappings: DerivedMappings) -> Deidentify:
    """De-identify a dataset in place under the basic profile, PHI taken from its own header."""
    deidentifier = MetadataDeidentifier(basic_profile)

    def run(ds: pydicom.Dataset) -> MetadataReport:
        return deidentifier.apply(ds, mappings, collect_header_phi(ds))

    return run
