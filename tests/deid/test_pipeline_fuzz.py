"""Mutated real files thrown at the whole de-identification pipeline (pixels + metadata):
no exception but DeidentificationError escapes, and no output carries a PHI value of its input."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from node.deid.metadata import MetadataDeidentifier
from node.deid.pipeline import DeidentificationError, Deidentifier
from node.deid.pixels import PixelCleaner
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation

REPO = Path(__file__).resolve().parents[2]
SEEDS = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm")]
# The patient's own identifiers (an institution's name may legitimately equal a kept Manufacturer).
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")


@pytest.fixture(scope="module")
def deidentifier() -> Deidentifier:
    return Deidentifier(MetadataDeidentifier(load_profile(REPO / "config" / "profiles" / "tcia.yaml")),
                        PixelCleaner.from_policy_file(REPO / "config" / "pixel-policy.yaml", timeout_seconds=60))


def _phi_values(data: bytes, path: Path) -> set[str]:
    """The PHI the (mutated) input itself declares, as far as it can be read at all."""
    path.write_bytes(data)
    try:
        ds = pydicom.dcmread(path, force=True)
        values = {str(ds.get(k, "")) for k in PHI_KEYWORDS}
    except Exception:  # noqa: BLE001 - unreadable input declares nothing readable
        return set()
    return {v for v in values if len(v) >= 6}


mutations = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=0, max_value=255)),
    min_size=1, max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), changes=mutations, cut=st.one_of(st.none(), st.floats(0.2, 1.0)))
def test_mutated_files_fail_closed_and_never_leak(deidentifier: Deidentifier, tmp_path: Path, seed: Path,
                                                  changes: list[tuple[float, int]], cut: float | None) -> None:
    data = bytearray(seed.read_bytes())
    for position, value in changes:  # overwrite bytes after the 128-byte preamble
        data[128 + int(position * (len(data) - 129))] = value
    if cut is not None:
        data = data[: max(132, int(len(data) * cut))]
    source = tmp_path / "mutated.dcm"
    phi = _phi_values(bytes(data), tmp_path / "probe.dcm")
    source.write_bytes(bytes(data))
    try:
        outcome = deidentifier.run_file(source, DerivedMappings(KeyedDerivation(b"fuzz-secret")))
    except DeidentificationError as exc:
        assert str(exc)  # a reason for the quarantine entry
        for value in phi:
            assert value not in str(exc)
        return
    for value in phi:
        assert value.encode() not in outcome.data, "a PHI value of the input is in the output"
