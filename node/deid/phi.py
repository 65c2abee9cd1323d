"""The identifying values an instance's own header gives away, in the forms they may take elsewhere.

Free-text cleaning and burned-in text detection both look for the patient's own name, IDs and
dates inside other text; they share this one collection so both find the same things: names in
any order and case, IDs, accession numbers, and dates in the formats people print them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Header attributes whose values are PHI wherever else they appear (keyword → kind).
NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ResponsiblePerson",
)
ID_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "MedicalRecordLocator",
    "AdmissionID",
    "PatientInsurancePlanCodeSequence",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "DeviceSerialNumber",
)
DATE_KEYWORDS = (
    "PatientBirthDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
)
PLACE_KEYWORDS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
    "StationName",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "RegionOfResidence",
    "CountryOfResidence",
)

INSTITUTION_KEYWORDS = ("InstitutionName", "InstitutionalDepartmentName")
STATION_KEYWORDS = ("StationName",)
# Words an institution's initials may leave out ("University Hospital of X" -> "UHX").
_INITIALS_SKIP = frozenset({"OF", "THE", "AND", "&", "FOR", "DE", "DU", "DES", "LA", "LE", "DI", "DEL", "DER", "VAN", "VON", "AT", "IN"})
_MIN_SITE_CODE = 3
_MONTHS = (
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
)
_NAME_SPLIT = re.compile(r"[\^\s,.\-']+")
_MIN_TOKEN = 2


@dataclass(frozen=True)
class HeaderPhi:
    """PHI strings from one instance's header, ready for matching inside other text."""

    name_tokens: frozenset[str] = field(default_factory=frozenset)
    full_names: frozenset[str] = field(default_factory=frozenset)
    identifiers: frozenset[str] = field(default_factory=frozenset)
    dates: frozenset[str] = field(default_factory=frozenset)
    places: frozenset[str] = field(default_factory=frozenset)
    # Site codes: an institution's initials ("XYZH"), the parts of a station name ("XYZH-CT2" -> "XYZH").
    site_codes: frozenset[str] = field(default_factory=frozenset)

    def terms(self) -> list[str]:
        """Every term, longest first, so a matcher prefers the whole name over a part of it."""
        return sorted(
            self.name_tokens | self.full_names | self.identifiers | self.dates | self.places | self.site_codes,
            key=lambda t: (-len(t), t),
        )


_TAGS = {
    keyword: tag_for_keyword(keyword)
    for keyword in (*NAME_KEYWORDS, *ID_KEYWORDS, *DATE_KEYWORDS, *PLACE_KEYWORDS)
}


def _values(ds: Dataset, keyword: str) -> list[str]:
    element = ds.get(_TAGS[keyword])
    if element is None or element.VR == "SQ" or element.value in (None, "", b""):
        return []
    value = element.value
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def name_forms(person_name: str) -> tuple[set[str], set[str]]:
    """Tokens of a DICOM person name, and the whole name in the orders people write it."""
    alphabetic = person_name.split("=")[0]
    parts = [p.strip() for p in alphabetic.split("^")]
    family, given = (parts + ["", ""])[:2]
    tokens = {t.upper() for t in _NAME_SPLIT.split(alphabetic) if len(t) >= _MIN_TOKEN}
    wholes = {
        " ".join(x for x in order if x).upper()
        for order in ((given, family), (family, given))
        if any(order)
    }
    wholes |= {f"{family}, {given}".upper()} if family and given else set()
    return tokens, {w for w in wholes if w}


def date_forms(value: str) -> set[str]:
    """A DICOM DA value (YYYYMMDD) in the formats it is printed in: 20240131, 2024-01-31, 01/31/2024, 31-JAN-2024 ..."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", value.strip()[:8])
    if not match:
        return {value} if value else set()
    y, m, d = match.groups()
    try:
        parsed = date(int(y), int(m), int(d))
    except ValueError:
        return {value}
    mon = _MONTHS[parsed.month - 1]
    forms = {
        f"{y}{m}{d}", f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}",
        f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{m}-{d}-{y}", f"{d}-{m}-{y}", f"{d}.{m}.{y}",
        f"{m}/{d}/{y[2:]}", f"{d}/{m}/{y[2:]}",
        f"{d}-{mon}-{y}", f"{d} {mon} {y}", f"{d}{mon}{y}", f"{mon} {d}, {y}",
        f"{parsed.month}/{parsed.day}/{y}",
    }
    return forms


def site_codes(institution: str) -> set[str]:
    """The initials people abbreviate an institution to, with and without its small words."""
    words = [w for w in re.split(r"[\s\-/,.()]+", institution.upper()) if w]
    forms = {"".join(w[0] for w in words), "".join(w[0] for w in words if w not in _INITIALS_SKIP)}
    return {f for f in forms if len(f) >= _MIN_SITE_CODE}


def station_codes(station: str) -> set[str]:
    """The parts of a station name that name the site ("XYZH-CT2" -> "XYZH"), letters only."""
    return {p for p in re.split(r"[^A-Za-z]+", station.upper()) if len(p) >= _MIN_SITE_CODE + 1}


def collect_header_phi(ds: Dataset) -> HeaderPhi:
    """Gather the instance's own PHI before the metadata step removes it from the header."""
    tokens: set[str] = set()
    wholes: set[str] = set()
    for keyword in NAME_KEYWORDS:
        for value in _values(ds, keyword):
            t, w = name_forms(value)
            tokens |= t
            wholes |= w
    identifiers = {v.upper() for k in ID_KEYWORDS for v in _values(ds, k) if len(v) >= _MIN_TOKEN}
    dates: set[str] = set()
    for keyword in DATE_KEYWORDS:
        for value in _values(ds, keyword):
            dates |= date_forms(value)
    places = {v.upper() for k in PLACE_KEYWORDS for v in _values(ds, k) if len(v) >= _MIN_TOKEN}
    codes = {c for k in INSTITUTION_KEYWORDS for v in _values(ds, k) for c in site_codes(v)}
    codes |= {c for k in STATION_KEYWORDS for v in _values(ds, k) for c in station_codes(v)}
    return HeaderPhi(
        name_tokens=frozenset(tokens),
        full_names=frozenset(wholes),
        identifiers=frozenset(identifiers),
        dates=frozenset(dates),
        places=frozenset(places),
        site_codes=frozenset(codes - places),
    )
