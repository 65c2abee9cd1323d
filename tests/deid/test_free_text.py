"""Free text under the shipped policy: people, places and site codes go, clinical words stay.

Names are generated (tests/deid/people.py: many locales, particles, hyphens, diacritics); the
clinical texts are ones scanners and requesters write. The named-entity model is the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.config import ConfigError
from node.deid.entities import find_entities
from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi, site_codes
from node.deid.profile import ProfileError, load_profile
from node.deid.pseudonyms import DerivedMappings
from node.deid.text import TextCleaner, TextPolicy
from node.deid.vocabulary import ClinicalVocabulary
from tests.deid.people import absent, institution, people, phone
from tests.deid.samples import CONFIG, PROFILES, profile_variant, read_test_file

POLICY = TextPolicy.load(CONFIG / "free-text.yaml")


def _cleaner(ds: Dataset | None = None) -> TextCleaner:
    return TextCleaner(POLICY, collect_header_phi(ds if ds is not None else read_test_file("CT_small.dcm")))


@pytest.mark.parametrize(
    "text",
    [
        "MR ANGIO NECK W/O", "MR LSPINE SAG STIR", "MR ORBITS W&WO FS", "MS PROTOCOL T2 AX",
        "MS LESIONS FLAIR SAG 3D", "DR HAND PA LAT", "DR CHEST AP PORTABLE", "MRS SVS TE 30",
        "MR DIXON PELVIS", "MR PROSTATE DWI ADC", "CT ABD/PELVIS C+", "T1 MPRAGE SAG POST GAD",
    ],
)
def test_modalities_and_diagnoses_that_look_like_honorifics_keep_every_word(text: str) -> None:
    assert _cleaner().clean(text) == text


@pytest.mark.parametrize("person", people(8, seed=11), ids=lambda p: p.full)
def test_an_honorific_before_a_generated_name_takes_the_name_and_leaves_the_clinical_words(person) -> None:  # type: ignore[no-untyped-def]
    cleaner = _cleaner()
    for written in (f"Mr {person.full}", f"Dr. {person.family}", f"MRS. {person.full.upper()}", f"Prof {person.full}"):
        cleaned = cleaner.clean(f"CT THORAX {written} FOLLOW UP")
        assert absent(person.tokens(), cleaned), (written, cleaned)
        assert cleaned.startswith("CT THORAX") and cleaned.endswith("FOLLOW UP"), cleaned


@pytest.mark.parametrize("person", people(8, seed=12), ids=lambda p: p.full)
def test_people_named_by_what_was_done_with_them_are_removed(person) -> None:  # type: ignore[no-untyped-def]
    cleaner = _cleaner()
    history = cleaner.clean(f"Headaches for 3 weeks, worse on waking / GP {person.full} tel {phone(len(person.full))}")
    assert absent(person.tokens(), history) and "tel" not in history.split()[-1:], history
    assert history.startswith("Headaches for 3 weeks, worse on waking"), history
    finding = cleaner.clean(f"Large left MCA infarct. Result phoned to {person.full} at 14:10.")
    assert absent(person.tokens(), finding), finding
    assert finding.startswith("Large left MCA infarct. Result phoned"), finding


def test_the_institutions_initials_and_the_stations_site_code_are_removed() -> None:
    ds = read_test_file("CT_small.dcm")
    ds.InstitutionName = institution(seed=5)
    ds.StationName = "QXWT-CT02"
    initials = "".join(w[0] for w in ds.InstitutionName.split()).upper()
    assert initials in site_codes(ds.InstitutionName)
    cleaner = _cleaner(ds)
    assert cleaner.clean(f"CT CHEST HIGH RES ({initials})") == "CT CHEST HIGH RES"
    assert cleaner.clean("QXWT LUNG SCREENING") == "LUNG SCREENING"


def test_the_model_finds_people_and_places_the_patterns_cannot(tmp_path: Path) -> None:
    person, place = people(1, seed=13)[0], "Bielsko-Biała"
    text = f"Patient transferred from {place}, reviewed with {person.full} yesterday"
    kinds = {kind for _, _, kind in find_entities(text)}
    assert "PERSON" in kinds
    cleaned = _cleaner().clean(text)
    assert absent(person.tokens(), cleaned), cleaned
    assert cleaned.startswith("Patient transferred from")


def test_each_attribute_the_tcia_profile_cleans_loses_names_and_ids_and_keeps_clinical_words(mappings: DerivedMappings) -> None:
    """Descriptions, comments, history, the request's own sequence, SR text and kept private text."""
    gp, reader, requester, caller, author = people(5, seed=14)
    ds = read_test_file("CT_small.dcm")
    ds.StudyDescription = f"CT HEAD WO CONTRAST Dr {reader.full}"
    ds.SeriesDescription = f"AX 5MM BRAIN {phone(3)}"
    ds.ImageComments = f"Motion artefact, rescanned per {caller.full}"
    ds.AdditionalPatientHistory = f"Fall at home, confusion / GP {gp.full} tel {phone(4)}"
    request = Dataset()
    request.RequestedProcedureDescription = f"CT HEAD ACUTE STROKE requested by Dr {requester.full}"
    request.RequestedProcedureID = "RQ-88231977"
    request.ScheduledProcedureStepID = "SPS-5521"
    ds.RequestAttributesSequence = Sequence([request])
    text_item = Dataset()
    text_item.ValueType = "TEXT"
    text_item.TextValue = f"No haemorrhage. Discussed with {caller.full}."
    ds.ContentSequence = Sequence([text_item])
    ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x04, "LO", f"HEAD ROUTINE {author.full}")

    MetadataDeidentifier(load_profile(PROFILES / "tcia.yaml")).apply(ds, mappings, collect_header_phi(ds))

    assert ds.StudyDescription.startswith("CT HEAD WO CONTRAST") and absent(reader.tokens(), ds.StudyDescription)
    assert ds.SeriesDescription == "AX 5MM BRAIN"
    assert ds.ImageComments.startswith("Motion artefact, rescanned") and absent(caller.tokens(), ds.ImageComments)
    assert ds.AdditionalPatientHistory.startswith("Fall at home, confusion") and absent(gp.tokens(), ds.AdditionalPatientHistory)
    cleaned_request = ds.RequestAttributesSequence[0]
    assert cleaned_request.RequestedProcedureDescription.startswith("CT HEAD ACUTE STROKE")
    assert absent(requester.tokens(), cleaned_request.RequestedProcedureDescription)
    assert "RequestedProcedureID" not in cleaned_request and "ScheduledProcedureStepID" not in cleaned_request
    assert ds.ContentSequence[0].TextValue.startswith("No haemorrhage.") and absent(caller.tokens(), ds.ContentSequence[0].TextValue)
    private = ds.get_private_item(0x0009, 0x04, "GEMS_IDEN_01").value
    assert private == "HEAD ROUTINE", private


def test_profiles_do_what_their_clean_descriptors_option_says() -> None:
    """tcia declares Clean Descriptors: every attribute whose Table E.1-1 cleanDescOpt is C is C.
    basic declares no option: those attributes keep the Basic Profile's action."""
    import json

    rows = json.loads((CONFIG / "reference" / "ps3.15-table-e.1-1.json").read_text())
    descriptors = [int(r["id"], 16) for r in rows if r.get("cleanDescOpt") == "C" and "x" not in r["id"].lower()]
    tcia, basic = load_profile(PROFILES / "tcia.yaml"), load_profile(PROFILES / "basic.yaml")
    assert "clean_descriptors" in tcia.options and not basic.options
    assert len(descriptors) > 100
    assert [hex(t) for t in descriptors if tcia.rule_for(t).code != "C"] == []  # type: ignore[union-attr]
    basic_codes = {r["id"].upper(): r["basicProfile"] for r in rows}
    assert all(basic.rule_for(t).code == basic_codes[f"{t:08X}"] for t in descriptors)  # type: ignore[union-attr]


def test_the_vocabulary_is_data_and_a_malformed_file_is_refused_by_name(tmp_path: Path) -> None:
    vocabulary = ClinicalVocabulary.load(CONFIG / "clinical-vocabulary.yaml")
    assert len(vocabulary) > 500
    assert vocabulary.is_clinical("SAG T1 FS POST") and not vocabulary.is_clinical("of the")
    broken = tmp_path / "clinical-vocabulary.yaml"
    broken.write_text("modalities: CT\n")
    with pytest.raises(ConfigError, match="clinical-vocabulary.yaml: modalities"):
        ClinicalVocabulary.load(broken)
    free_text = tmp_path / "free-text.yaml"
    free_text.write_text((CONFIG / "free-text.yaml").read_text().replace("clinical-vocabulary.yaml", str(CONFIG / "clinical-vocabulary.yaml")).replace("patterns: [email,", "patterns: [no_such_pattern, email,"))
    with pytest.raises(ProfileError, match="last_look"):
        load_profile(profile_variant(tmp_path, {f"{CONFIG}/free-text.yaml": str(free_text)}))


@pytest.mark.parametrize("surname", ["Dixon", "Head", "Bone", "Flair"])
def test_a_title_case_surname_after_an_honorific_goes_even_when_it_is_a_clinical_word(surname: str) -> None:
    cleaned = _cleaner().clean(f"MR PELVIS DIXON, reviewed with Dr {surname}")
    assert cleaned == "MR PELVIS DIXON, reviewed with", cleaned
