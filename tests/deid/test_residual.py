"""The last look before forwarding: PHI left in any text value quarantines the instance, with a
reason naming the tag and the kind only; clean instances pass."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.deid.metadata import MetadataDeidentifier
from node.deid.pipeline import DeidentificationError, Deidentifier
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings
from tests.deid.people import people, phone
from tests.deid.samples import PROFILES, profile_variant, read_test_file


@pytest.fixture(scope="module")
def keeping(tmp_path_factory: pytest.TempPathFactory) -> Deidentifier:
    """The tcia profile keeping Derivation Description verbatim instead of cleaning it: what slips through."""
    variant = profile_variant(
        tmp_path_factory.mktemp("keeping"),
        {'{tag: "(0008,2111)", action: C}': '{tag: "(0008,2111)", action: K}'},
        base="tcia.yaml",
    )
    return Deidentifier(MetadataDeidentifier(load_profile(variant)), None)


def test_clean_instances_pass_the_last_look(mappings: DerivedMappings) -> None:
    deidentifier = Deidentifier(MetadataDeidentifier(load_profile(PROFILES / "tcia.yaml")), None)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm", "JPEG2000.dcm"):
        assert deidentifier.run(read_test_file(name), mappings).data, name


def test_a_person_left_in_a_kept_attribute_quarantines_with_a_reason_free_of_the_value(keeping: Deidentifier, mappings: DerivedMappings) -> None:
    person = people(1, seed=21)[0]
    ds = read_test_file("CT_small.dcm")
    ds.DerivationDescription = f"Reformatted by {person.full}, see Dr. {person.family}"
    with pytest.raises(DeidentificationError) as caught:
        keeping.run(ds, mappings)
    reason = str(caught.value)
    assert "(0008,2111)" in reason
    assert all(token.lower() not in reason.lower() for token in person.tokens())


def test_the_patients_own_name_in_a_nested_kept_value_is_found(keeping: Deidentifier, mappings: DerivedMappings) -> None:
    patient = people(1, seed=22)[0]
    ds = read_test_file("MR_small.dcm")
    ds.PatientName = f"{patient.family}^{patient.given}"
    item = Dataset()
    item.DerivationDescription = f"copy for {patient.family.upper()}"
    ds.SourceImageSequence = Sequence([item])
    with pytest.raises(DeidentificationError, match=r"header value in \(0008,2112\)\[0\]\(0008,2111\)"):
        keeping.run(ds, mappings)


def test_a_phone_number_left_in_a_kept_attribute_is_found(keeping: Deidentifier, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds.DerivationDescription = f"MPR, questions {phone(9)}"
    with pytest.raises(DeidentificationError, match=r"phone\w* in \(0008,2111\)"):
        keeping.run(ds, mappings)


def test_clinical_text_in_a_kept_attribute_passes(keeping: Deidentifier, mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds.DerivationDescription = "MR BRAIN SAG T1 MPR 3MM, DR CHEST PA"
    keeping.run(ds, mappings)
    assert ds.DerivationDescription == "MR BRAIN SAG T1 MPR 3MM, DR CHEST PA"
