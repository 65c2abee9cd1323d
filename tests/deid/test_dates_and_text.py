"""Shifted dates stay valid DICOM values; ages over 89 are capped; free text keeps clinical words."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from node.deid.dates import cap_age, shift_date, shift_datetime
from node.deid.metadata import MetadataDeidentifier
from node.deid.phi import collect_header_phi
from node.deid.profile import load_profile
from node.deid.pseudonyms import DerivedMappings
from node.deid.text import TextCleaner, TextPolicy
from tests.deid.samples import CONFIG, PROFILES, read_test_file

DAYS = st.integers(min_value=-3650, max_value=3650)
DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2090, 12, 31))


@given(DATES, DAYS)
def test_a_shifted_date_is_a_valid_da_moved_by_exactly_the_offset(day: date, offset: int) -> None:
    shifted = shift_date(day.strftime("%Y%m%d"), offset)
    assert shifted is not None and len(shifted) == 8
    assert date(int(shifted[:4]), int(shifted[4:6]), int(shifted[6:])) - day == timedelta(days=offset)


@given(DATES, DAYS, st.sampled_from(["", "12", "1230", "123045", "123045.5", "123045.123456"]), st.sampled_from(["", "+0100", "-0500"]))
def test_a_shifted_datetime_keeps_time_fraction_and_utc_offset(day: date, offset: int, time: str, zone: str) -> None:
    value = day.strftime("%Y%m%d") + time + zone
    shifted = shift_datetime(value, offset)
    assert shifted is not None
    assert shifted[8:] == time + zone
    assert shifted[:8] == shift_date(day.strftime("%Y%m%d"), offset)


def test_partial_datetimes_keep_their_precision() -> None:
    assert shift_datetime("2024", -400) == "2022"
    assert shift_datetime("202403", -1) == "202402"


def test_values_that_are_not_dates_are_not_guessed() -> None:
    assert shift_date("UNKNOWN", 5) is None
    assert shift_date("20241301", 5) is None
    assert shift_datetime("2024x", 5) is None


def test_the_old_dotted_da_form_is_read_and_written_as_yyyymmdd() -> None:
    assert shift_date("2024.02.28", 1) == "20240229"


def test_ages_over_89_become_090y_and_younger_ages_stay() -> None:
    assert cap_age("094Y", 89) == "090Y"
    assert cap_age("1100M", 89) == "1100M"  # not a valid AS: left for the validator
    assert cap_age("999M", 89) == "999M"  # 83 years
    assert cap_age("089Y", 89) == "089Y"
    assert cap_age("045Y", 89) == "045Y"


def test_the_tcia_profile_caps_patient_age(mappings: DerivedMappings) -> None:
    ds = read_test_file("CT_small.dcm")
    ds.PatientAge = "097Y"
    MetadataDeidentifier(load_profile(PROFILES / "tcia.yaml")).apply(ds, mappings, collect_header_phi(ds))
    assert ds.PatientAge == "090Y"


def _cleaner(ds) -> TextCleaner:  # type: ignore[no-untyped-def]
    return TextCleaner(TextPolicy.load(CONFIG / "free-text.yaml"), collect_header_phi(ds))


def test_header_names_are_removed_in_any_order_and_case() -> None:
    ds = read_test_file("MR_small.dcm")
    ds.PatientName = "TESTPATIENT^ALPHA"
    cleaner = _cleaner(ds)
    for text in ("CT HEAD TESTPATIENT ALPHA", "CT HEAD Alpha Testpatient", "CT HEAD testpatient, alpha", "CT HEAD TESTPATIENT^ALPHA"):
        assert cleaner.clean(text) == "CT HEAD", text


def test_patterns_remove_contact_details_and_dates_but_not_clinical_text() -> None:
    cleaner = _cleaner(read_test_file("MR_small.dcm"))
    assert cleaner.clean("Call (555) 010-1234 or jane@example.invalid") == "Call or"
    assert cleaner.clean("SEEN 31-JAN-2024 AT 10.1.2.3") == "SEEN AT"
    assert cleaner.clean("ROUTINE BRAIN at Synthetic General Hospital") == "ROUTINE BRAIN"
    for clinical in ("CHEST PA AND LATERAL", "T1 AXIAL POST 5mm", "3 PHASE LIVER CT", "BY PROTOCOL 2.5 MM", "STRESS AT REST", "Head^Routine"):
        assert cleaner.clean(clinical) == clinical
