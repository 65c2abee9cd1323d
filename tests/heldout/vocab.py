"""Vocabularies of the held-out probes: synthetic people, places and ids (Faker, several locales),
and clinical phrases and harmless image annotations of this package's own.

Nothing here is taken from the node's rule lists or the conformance generator: the probes must
not share the vocabulary of the rules they measure. Every value is synthetic.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_IE", "pt_PT")

# Name particles and prefixes added on top of what Faker's locales produce.
_PARTICLES = ("van der", "de la", "van den", "von", "di", "del", "ter", "da", "le")
_APOSTROPHE_PREFIXES = ("O'", "D'")

_HOSPITAL_KINDS = {
    "en_US": ("Memorial Hospital", "Medical Center", "Regional Health", "Community Hospital"),
    "en_GB": ("General Infirmary", "NHS Foundation Trust", "Royal Hospital", "Cottage Hospital"),
    "en_IE": ("University Hospital", "Regional Hospital", "Mercy Hospital"),
    "de_DE": ("Klinikum", "Kreiskrankenhaus", "Universitätsklinikum", "Radiologie am Markt"),
    "fr_FR": ("Centre Hospitalier", "Clinique", "CHU", "Hôpital"),
    "nl_NL": ("Ziekenhuis", "Medisch Centrum", "Gasthuis"),
    "es_ES": ("Hospital Universitario", "Clínica", "Hospital Comarcal"),
    "it_IT": ("Ospedale", "Policlinico", "Azienda Ospedaliera"),
    "pt_PT": ("Hospital Distrital", "Centro Hospitalar", "Clínica"),
}
_HOSPITAL_BEFORE_CITY = {"de_DE", "fr_FR", "es_ES", "it_IT", "pt_PT"}

# Words that identify no one on their own: a leftover "van der" or "Klinikum" is not scored as a
# leak (the whole value and its other words still are).
NOT_IDENTIFYING = (frozenset(w for p in _PARTICLES for w in p.split()) | {"dr", "mr", "mrs", "ms", "prof", "st"}
                   | frozenset(w.lower() for kinds in _HOSPITAL_KINDS.values() for kind in kinds for w in kind.split()))

DATE_FORMATS = ("%d.%m.%Y", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%y", "%d %b %Y", "%d-%b-%Y", "%B %d, %Y",
                "%Y%m%d", "%d.%m.%y", "%Y/%m/%d")


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    locale: str

    @property
    def dicom(self) -> str:
        return f"{self.family}^{self.given}"

    def written(self, rng: random.Random) -> str:
        """The name as people type it into a form or a scanner console, in one of several ways."""
        style = rng.randrange(6)
        if style == 0:
            return f"{self.given} {self.family}"
        if style == 1:
            return f"{self.family.upper()}, {self.given}"
        if style == 2:
            return f"{self.given[0]}. {self.family}"
        if style == 3:
            return f"{self.family.upper()} {self.given.upper()}"
        if style == 4:
            return f"{self.family}^{self.given}"
        return f"{self.family}, {self.given[0]}."


@dataclass(frozen=True)
class Institution:
    name: str
    initials: str
    city: str
    address: str
    phone: str


class Vocabulary:
    """Seeded source of synthetic identifiers; one per corpus so a seed always gives the same corpus."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fakers: dict[str, Faker] = {}
        for locale in LOCALES:
            fake = Faker(locale)
            fake.seed_instance(rng.randrange(2**31))
            self.fakers[locale] = fake

    def locale(self) -> str:
        return self.rng.choice(LOCALES)

    def person(self, locale: str | None = None, sex: str | None = None) -> Person:
        locale = locale or self.locale()
        fake = self.fakers[locale]
        given = fake.first_name_female() if sex == "F" else fake.first_name_male() if sex == "M" else fake.first_name()
        family = fake.last_name()
        roll = self.rng.random()
        if roll < 0.15:
            given = f"{given}-{fake.first_name()}"
        elif roll < 0.3:
            family = f"{self.rng.choice(_PARTICLES)} {family}"
        elif roll < 0.4:
            family = f"{self.rng.choice(_APOSTROPHE_PREFIXES)}{family}"
        elif roll < 0.55:
            family = f"{family}-{fake.last_name()}"
        return Person(given, family, locale)

    def institution(self, locale: str | None = None) -> Institution:
        locale = locale or self.locale()
        fake = self.fakers[locale]
        city = fake.city()
        kind = self.rng.choice(_HOSPITAL_KINDS[locale])
        name = f"{kind} {city}" if locale in _HOSPITAL_BEFORE_CITY else f"{city} {kind}"
        if self.rng.random() < 0.25:
            name = f"St. {fake.first_name()}'s {kind}" if locale.startswith("en") else f"{kind} {fake.last_name()}"
        initials = "".join(w[0] for w in name.replace("-", " ").split() if w[0].isalpha()).upper()
        return Institution(name, initials, city, fake.street_address().replace("\n", ", "), fake.phone_number())

    def phone(self, locale: str | None = None) -> str:
        return self.fakers[locale or self.locale()].phone_number()

    def address(self, locale: str) -> str:
        fake = self.fakers[locale]
        return f"{fake.street_address()}, {fake.postcode()} {fake.city()}".replace("\n", ", ")

    def mrn(self) -> str:
        """Hospital record numbers in formats of this package's own."""
        digits = lambda n: "".join(self.rng.choices(string.digits, k=n))  # noqa: E731
        letters = lambda n: "".join(self.rng.choices(string.ascii_uppercase, k=n))  # noqa: E731
        return self.rng.choice((
            lambda: f"{letters(1)}{digits(7)}",
            lambda: f"{letters(3)}-{digits(6)}",
            lambda: f"{digits(2)}/{digits(6)}",
            lambda: f"{digits(9)}{letters(1)}",
            lambda: f"{digits(3)} {digits(3)} {digits(4)}",
        ))()

    def accession(self, when: date) -> str:
        digits = "".join(self.rng.choices(string.digits, k=6))
        return self.rng.choice((f"R{when:%y}{digits}", f"{when:%Y}-{digits[:5]}", f"XA{digits}{when:%m}"))

    def birth_date(self) -> date:
        return date(1930, 1, 1) + timedelta(days=self.rng.randrange(365 * 75))

    def exam_date(self) -> date:
        return date(2012, 1, 1) + timedelta(days=self.rng.randrange(365 * 12))

    def written_date(self, when: date) -> str:
        return when.strftime(self.rng.choice(DATE_FORMATS)).upper() if self.rng.random() < 0.2 else \
            when.strftime(self.rng.choice(DATE_FORMATS))


# --- clinical text that must survive de-identification ---------------------------------------

ANATOMY = {
    "CT": ("CHEST", "ABDOMEN PELVIS", "HEAD", "CERVICAL SPINE", "SINUS", "RENAL", "PANCREAS", "CAROTID ANGIO"),
    "MR": ("KNEE", "BRAIN", "LUMBAR SPINE", "SHOULDER", "PROSTATE", "LIVER", "ORBITS", "HIP"),
    "CR": ("CHEST", "HAND", "FOOT", "PELVIS", "ANKLE", "WRIST"),
    "DX": ("CHEST", "KNEE", "SHOULDER", "THORACIC SPINE", "ABDOMEN"),
    "MG": ("BREAST BILATERAL", "BREAST LEFT", "BREAST RIGHT"),
    "US": ("ABDOMEN COMPLETE", "THYROID", "CAROTID BILATERAL", "RENAL", "PELVIS TRANSVAGINAL", "SCROTUM"),
    "SC": ("CHEST", "BRAIN", "ABDOMEN", "HEART"),
}
_CONTRAST = ("W/O CONTRAST", "W CONTRAST", "W/WO CONTRAST", "NON CONTRAST", "WITH IV CONTRAST", "C+", "C-")
_PROTOCOLS = ("PE PROTOCOL", "STROKE PROTOCOL", "LOW DOSE", "TRAUMA", "3 PHASE", "ROUTINE", "FOLLOW UP")
SERIES_NAMES = {
    "CT": ("AXIAL 5MM SOFT TISSUE", "COR 3MM BONE", "LUNG 1.25MM", "SAG MPR", "ARTERIAL PHASE", "TOPOGRAM"),
    "MR": ("T1 SAG", "T2 FLAIR AXIAL", "DWI B1000", "ADC MAP", "T2 TSE COR", "PD FS SAG", "T1 VIBE POST", "STIR COR"),
    "CR": ("PA", "LATERAL", "OBLIQUE", "AP"),
    "DX": ("AP ERECT", "LAT", "PA INSPIRATION", "SUPINE"),
    "MG": ("L CC", "R CC", "L MLO", "R MLO", "TOMO L CC"),
    "US": ("B MODE", "COLOR DOPPLER", "SPECTRAL DOPPLER", "CINE LOOP"),
    "SC": ("KEY IMAGES", "3D RECON", "SCREEN CAPTURE", "MPR OVERVIEW"),
}
HISTORY = ("SHORTNESS OF BREATH", "RULE OUT PE", "R/O FRACTURE", "FOLLOW UP NODULE", "PAIN AFTER FALL",
           "KNOWN HCC SURVEILLANCE", "STAGING", "SUDDEN HEADACHE", "PALPABLE LUMP", "ELEVATED PSA",
           "CHRONIC KNEE PAIN", "POST OP CHECK", "FEVER AND COUGH", "HEMATURIA", "SCREENING")
FINDINGS = ("NO ACUTE INTRACRANIAL ABNORMALITY", "SMALL LEFT PLEURAL EFFUSION", "MENISCAL TEAR MEDIAL",
            "STABLE 4 MM NODULE RIGHT UPPER LOBE", "NO EVIDENCE OF FRACTURE", "MILD DEGENERATIVE CHANGE",
            "SIMPLE RENAL CYST", "BIRADS 2 BENIGN", "NORMAL STUDY", "COMPARED WITH PRIOR STUDY")


def study_phrase(rng: random.Random, modality: str) -> str:
    anatomy = rng.choice(ANATOMY[modality])
    extra = rng.choice(_CONTRAST if modality in ("CT", "MR") else _PROTOCOLS)
    return f"{modality} {anatomy} {extra}" if rng.random() < 0.7 else f"{anatomy} {extra}"


# --- harmless image annotations: must not be counted as PHI ------------------------------------

def annotation(rng: random.Random, modality: str) -> str:
    n = rng.randrange
    common = (
        lambda: rng.choice("RLAPHF"),
        lambda: f"W:{n(80, 2000)} L:{n(-600, 400)}",
        lambda: f"WW {n(100, 1600)} WL {n(20, 600)}",
        lambda: f"{n(1, 10)} cm",
        lambda: f"SE {n(1, 12)} IM {n(1, 200)}",
        lambda: f"Se:{n(1, 9)} Im:{n(1, 60)}/{n(60, 120)}",
        lambda: f"Zoom {n(10, 30) / 10:.1f}",
        lambda: f"FOV {n(18, 45)} cm",
    )
    specific = {
        "CT": (lambda: f"{rng.choice((80, 100, 120, 140))} kV {n(50, 400)} mAs", lambda: f"ST {rng.choice((0.6, 1.25, 3.0, 5.0))}mm"),
        "MR": (lambda: f"TR {n(400, 6000)} TE {n(8, 120)}", lambda: f"ET {n(1, 30)}"),
        "CR": (lambda: f"{n(50, 125)} kVp {n(1, 40)} mAs", lambda: rng.choice(("PORTABLE", "ERECT", "SUPINE"))),
        "DX": (lambda: f"{n(50, 125)} kV {n(1, 40)} mAs", lambda: rng.choice(("AP", "PA", "LAT"))),
        "MG": (lambda: f"kVp {n(24, 34)} mAs {n(20, 200)}", lambda: rng.choice(("L CC", "R CC", "L MLO", "R MLO"))),
        "US": (lambda: f"MI {n(2, 14) / 10:.1f} TIs {n(1, 9) / 10:.1f}", lambda: f"{n(2, 15)} MHz", lambda: f"Gain {n(20, 80)}"),
        "SC": (lambda: "3D", lambda: f"Slab {n(1, 40)} mm"),
    }
    return rng.choice(common + specific[modality])()
