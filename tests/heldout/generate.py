"""Held-out probe corpus: seeded synthetic studies with PHI in headers, free text, private
elements and burned into the pixels, each instance with a ground-truth JSON beside it.

Seed groups (see `SEEDS`): TUNE seeds 1-5 may be looked at while tuning the node; REPORT seeds
101-105 are for measuring only — nobody looks at their images, values or failures while tuning,
so the report stays a held-out measure. The test in the suite uses a small batch of seed 101.

Vocabularies and layouts are this package's own (tests/heldout/vocab.py, burn.py); header
dispositions follow the TCIA curation profile (the reference tcia-profile-actions.json of
MIC-DKFZ/miccai2024_midi-b-submission, Apache-2.0): kept descriptions must keep their clinical
words, removed or emptied elements must lose every PHI token, dates are shifted, UIDs replaced.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage, ComputedRadiographyImageStorage, CTImageStorage, DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage,
    UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, generate_uid,
)

from tests.heldout import burn
from tests.heldout.vocab import (
    FINDINGS, HISTORY, NOT_IDENTIFYING, SERIES_NAMES, Institution, Person, Vocabulary, annotation, study_phrase,
)

SEEDS = {"tune": (1, 2, 3, 4, 5), "report": (101, 102, 103, 104, 105)}
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "US", "SC")

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage, "CR": ComputedRadiographyImageStorage,
              "DX": DigitalXRayImageStorageForPresentation, "MG": DigitalMammographyXRayImageStorageForPresentation,
              "US": UltrasoundImageStorage, "SC": SecondaryCaptureImageStorage}
_SHAPE = {"CT": (256, 256), "MR": (256, 224), "CR": (320, 256), "DX": (288, 320), "MG": (320, 256),
          "US": (240, 320), "SC": (240, 320)}
_RGB = {"US", "SC"}
_LO_MAX = 64


@dataclass(frozen=True)
class Check:
    """One scored expectation in one instance: `path` as tests/conformance paths it, `where` a
    PHI-free label (element and PHI class) that failures are counted by."""

    path: str
    action: str
    value: str
    where: str


@dataclass
class Truth:
    file: str
    sop_instance_uid: str
    modality: str
    checks: list[Check] = field(default_factory=list)
    burned_in: list[dict] = field(default_factory=list)  # type: ignore[type-arg]
    text_in_pixels: str = "none"  # none | annotations | phi
    pixel_md5: str = ""

    def write(self, directory: Path) -> None:
        (directory / f"{self.file}.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> "Truth":
        raw = json.loads(path.read_text())
        raw["checks"] = [Check(**c) for c in raw["checks"]]
        return cls(**raw)


# --- people and studies ------------------------------------------------------------------------

@dataclass
class Patient:
    person: Person
    sex: str
    birth: date
    patient_id: str
    other_id: str
    address: str
    phone: str
    mother: Person
    institution: Institution
    referrer: Person
    operator: Person


@dataclass
class Study:
    modality: str
    uid: str
    when: date
    accession: str
    study_id: str
    institution: Institution
    manufacturer: str
    body_part: str


class _Uids:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return generate_uid(entropy_srcs=["heldout", str(self.seed), str(self.count)])


def _patient(vocab: Vocabulary) -> Patient:
    locale = vocab.locale()
    sex = vocab.rng.choice("MF")
    phone = vocab.phone(locale)
    while len(phone) > 16:  # Telephone Numbers is SH
        phone = vocab.phone(locale)
    return Patient(vocab.person(locale, sex), sex, vocab.birth_date(), vocab.mrn(), vocab.mrn(),
                   vocab.address(locale), phone, vocab.person(locale, "F"),
                   vocab.institution(locale), vocab.person(locale), vocab.person(locale))


# --- free text with PHI in it ------------------------------------------------------------------

def fold(text: str) -> str:
    """Upper case without diacritics: a leak is a leak whether or not the accents survived."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).upper()


_NOT_IDENTIFYING_FOLDED = frozenset(fold(w) for w in NOT_IDENTIFYING)


def phi_tokens(value: str, kind: str) -> list[str]:
    """What must not survive of one PHI value: its words (3+ letters, NOT_IDENTIFYING aside) and digit runs
    (4+), besides the whole value. Dates are judged whole (a bare year is not the date)."""
    if kind == "date":
        return []
    words = [w for w in re.findall(r"[^\W\d_]{3,}", fold(value)) if w not in _NOT_IDENTIFYING_FOLDED]
    return words + re.findall(r"\d{4,}", value)


def contains_word(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (case and diacritics folded)."""
    needle = re.escape(fold(phrase).strip())
    return bool(needle) and re.search(rf"(?<![^\W_]){needle}(?![^\W_])", fold(text)) is not None


@dataclass
class FreeText:
    text: str
    removed: list[tuple[str, str]]  # (value, PHI class)
    retained: list[str]


def free_text(rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study, clinical: str,
              *, phi_chance: float, limit: int | None) -> FreeText:
    """A clinical phrase with, sometimes, PHI inserted by one of this package's templates."""
    for _ in range(20):
        ref = patient.referrer if rng.random() < 0.6 else vocab.person()
        other_date = vocab.written_date(study.when if rng.random() < 0.5 else vocab.exam_date())
        inst = study.institution
        templates = [
            (f"{clinical} - ref. {ref.written(rng)}", "name"),
            (f"{clinical} ({inst.initials})", "institution") if len(inst.initials) >= 3 else (f"{clinical} @ {inst.name}", "institution"),
            (f"{clinical} {other_date}", "date"),
            (f"{patient.person.written(rng)} {clinical}", "name"),
            (f"{clinical}, called to Dr {ref.family} {other_date}", "name+date"),
            (f"{clinical} per GP {ref.written(rng)} tel {inst.phone}", "name+phone"),
            (f"{clinical} MRN {patient.patient_id}", "id"),
            (f"{clinical} @ {inst.name}", "institution"),
            (f"{clinical} / Überweisung {ref.written(rng)}", "name"),
            (f"{clinical}; adressé par Dr {ref.family}", "name"),
            (f"{clinical} verwezen door huisarts {ref.given} {ref.family}", "name"),
            (f"{clinical} acc {study.accession}", "id"),
        ]
        if rng.random() >= phi_chance:
            return FreeText(clinical, [], [clinical])
        text, kinds = rng.choice(templates)
        removed = _inserted(text, clinical, kinds, ref, patient, inst, other_date, study)
        if limit is not None and len(text) > limit:
            continue
        if _collides(text, removed):
            continue  # a PHI word that is also a clinical or template word cannot be scored both ways
        return FreeText(text, removed, [clinical])
    return FreeText(clinical, [], [clinical])


def _collides(text: str, removed: list[tuple[str, str]]) -> bool:
    """Whether a PHI token also occurs in what is left of `text` once every PHI value is cut out."""
    rest = fold(text)
    for value, _ in removed:
        rest = rest.replace(fold(value), " ")
    return any(contains_word(rest, token) for value, kind in removed for token in phi_tokens(value, kind))


def _inserted(text: str, clinical: str, kinds: str, ref: Person, patient: Patient, inst: Institution,
              written_date: str, study: Study) -> list[tuple[str, str]]:
    """The PHI values a template put into `text` (each found in the text but outside `clinical`)."""
    rest = text.replace(clinical, " ")
    candidates = [(patient.person.family, "name"), (patient.person.given, "name"), (ref.family, "name"),
                  (ref.given, "name"), (inst.name, "institution"), (inst.initials, "institution"),
                  (inst.phone, "phone"), (written_date, "date"), (patient.patient_id, "id"), (study.accession, "id")]
    wanted = set(kinds.split("+"))
    return [(v, k) for v, k in candidates
            if k in wanted and v and fold(v) in fold(rest) and (k != "institution" or len(v) >= 3)]


# --- pixels --------------------------------------------------------------------------------------

def _base_frame(rng: random.Random, modality: str) -> np.ndarray:
    rows, cols = _SHAPE[modality]
    noise = np.random.default_rng(rng.randrange(2**32))
    y, x = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2 + rng.randrange(-10, 10), cols / 2 + rng.randrange(-10, 10)
    ry, rx = rows * rng.uniform(0.28, 0.38), cols * rng.uniform(0.3, 0.4)
    inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    if modality in _RGB:
        grey = np.where(inside < 1, 60 + 80 * np.exp(-inside) + noise.normal(0, 18, (rows, cols)), 0)
        rgb = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2)
        if rng.random() < 0.5:  # a colour-flow blob
            blob = ((y - cy) ** 2 + (x - cx) ** 2) < (min(rows, cols) / 10) ** 2
            rgb[blob] = (200, 40, 30) if rng.random() < 0.5 else (30, 60, 210)
        return rgb.astype(np.uint8)
    if modality == "CT":
        values = np.where(inside < 1, 1000 + 60 * np.cos(x / 9.0) + noise.normal(0, 20, (rows, cols)), noise.normal(20, 5, (rows, cols)))
        values = np.where((inside > 0.8) & (inside < 1), 1900, values)
    elif modality == "MR":
        values = np.where(inside < 1, 300 + 500 * np.exp(-inside * 2) + noise.normal(0, 25, (rows, cols)), noise.normal(10, 4, (rows, cols)))
    elif modality == "MG":
        side = (x - (0 if rng.random() < 0.5 else cols)) / cols
        values = np.where(side ** 2 + ((y - rows / 2) / (rows * 0.45)) ** 2 < 0.5, 1800 + noise.normal(0, 120, (rows, cols)), 200)
    else:  # CR, DX: a chest-like field
        values = 900 + 1600 * np.exp(-inside) + 300 * np.sin(y / 13.0) + noise.normal(0, 40, (rows, cols))
    return np.clip(values, 0, 4095).astype(np.uint16)


def _inks(modality: str, rng: random.Random) -> tuple[object, object]:
    """(bright, dark) ink as the viewer sees it (a MONOCHROME1 frame is drawn as seen, then its
    values inverted as such a modality stores them). Neither ink is an extreme value: a uniform box
    painted over the text in the darkest or brightest value changes every stroke pixel, so the
    stroke-based check sees it hidden whichever way the redaction was painted."""
    if modality in _RGB:
        bright = rng.choice(((240, 240, 240), (250, 250, 40), (40, 250, 40), (40, 240, 240), (250, 160, 20)))
        return np.array(bright), np.array((rng.randrange(30, 60),) * 3)
    return rng.randrange(3500, 4000), rng.randrange(400, 700)


@dataclass(frozen=True)
class _Block:
    """Text a series shows at the same place on every frame of every instance."""

    layout: str
    lines: list[list[burn.Segment]]
    style: burn.Style
    where: str
    nudge: tuple[int, int] = (0, 0)


def _phi_value(kind: str, rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study) -> str:
    """A value burned into the image: the header's own, written another way, or another one."""
    own = rng.random() < 0.55
    if kind == "name":
        return (patient.person if own else vocab.person()).written(rng)
    if kind == "birth":
        return vocab.written_date(patient.birth if own else vocab.birth_date())
    if kind == "exam_date":
        return vocab.written_date(study.when if own else vocab.exam_date())
    if kind == "id":
        return patient.patient_id if own else vocab.mrn()
    if kind == "institution":
        inst = study.institution if own else vocab.institution()
        return inst.initials if len(inst.initials) >= 3 and rng.random() < 0.3 else inst.name
    if kind == "accession":
        return study.accession if own else vocab.accession(study.when)
    if kind == "referrer":
        return f"Dr {(patient.referrer if own else vocab.person()).family}"
    return patient.phone if own else vocab.phone()


def _plan(rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study, with_phi: bool) -> list[_Block]:
    """What a series shows burned in: PHI blocks of several layouts and harmless annotations."""
    fonts = burn.fonts()
    modality = study.modality
    scale = min(_SHAPE[modality]) / 256

    def style(**extra: object) -> burn.Style:
        size = int(rng.randrange(11, 19) * scale)
        return burn.Style(rng.choice(fonts), size, rng.random() < 0.6, **extra)  # type: ignore[arg-type]

    def value(kind: str) -> burn.Segment:
        return burn.Segment(_phi_value(kind, rng, vocab, patient, study), "date" if kind.endswith(("birth", "date")) else kind)

    blocks: list[_Block] = []
    if with_phi:
        for layout in rng.sample(burn.LAYOUTS, rng.choice((1, 1, 2, 2, 3))):
            kinds = rng.sample(list(burn.LABELS), rng.randrange(1, 4))
            if layout == "corner_labels":
                lines = [[burn.Segment(f"{rng.choice(burn.LABELS[k])}:", None), value(k)] for k in kinds]
                where = rng.choice(("top_left", "top_right", "bottom_left", "bottom_right"))
                blocks.append(_Block(layout, lines, style(), where))
            elif layout == "banner":
                blocks.append(_Block(layout, [[value(k) for k in kinds[:2]]], style(), rng.choice(("top_centre", "bottom_centre"))))
            elif layout == "margin_vertical":
                blocks.append(_Block(layout, [[value(k) for k in kinds[:2]]], style(vertical=True), rng.choice(("left_edge", "right_edge"))))
            elif layout == "inverse_box":
                where = rng.choice(("top_left", "bottom_right", "top_right", "bottom_left", "bottom_centre"))
                blocks.append(_Block(layout, [[value(k)] for k in kinds[:2]], style(), where))
            elif layout == "outlined":
                blocks.append(_Block(layout, [[value(kinds[0])]], style(outline=True), "lower_third",
                                     (rng.randrange(-10, 10), rng.randrange(-20, 20))))
            else:  # side_stack: unlabelled values one under another
                blocks.append(_Block(layout, [[value(k)] for k in kinds], style(), rng.choice(("left_edge", "right_edge"))))
    for _ in range(rng.randrange(1, 4)):
        where = rng.choice(("top_left", "top_right", "bottom_left", "bottom_right", "left_edge", "right_edge", "top_centre"))
        blocks.append(_Block("annotation", [[burn.Segment(annotation(rng, modality), None)]], style(), where))
    return blocks


def _burn(frame: np.ndarray, blocks: list[_Block], inks: tuple[object, object]) -> list[burn.Drawn]:
    bright, dark = inks
    canvas = burn.Canvas(frame)
    for block in blocks:
        height, width = burn.block_size(block.lines, block.style)
        pad = 3 if block.layout == "inverse_box" else 0
        spot = burn.place(canvas, height + 2 * pad, width + 2 * pad, block.where, block.nudge)
        if spot is None:
            continue  # does not fit there on this image: the series shows less text
        top, left = spot
        if block.layout == "inverse_box":
            burn.fill_box(canvas, top, left, height + 2 * pad, width + 2 * pad, bright)  # type: ignore[arg-type]
            burn.draw_block(canvas, block.lines, block.style, top + pad, left + pad, block.layout, dark)  # type: ignore[arg-type]
        elif block.style.outline:
            burn.draw_block(canvas, block.lines, block.style, top, left, block.layout, bright, dark)  # type: ignore[arg-type]
        else:
            burn.draw_block(canvas, block.lines, block.style, top, left, block.layout, bright)  # type: ignore[arg-type]
    return canvas.items


# --- headers -------------------------------------------------------------------------------------

def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


class _Instance:
    """One dataset being built, with the checks the scorer will run on its de-identified copy."""

    def __init__(self, ds: Dataset, truth: Truth) -> None:
        self.ds = ds
        self.truth = truth

    def expect(self, path: str, action: str, value: str, where: str) -> None:
        self.truth.checks.append(Check(path, action, value, where))

    def phi(self, keyword: str, value: str, kind: str) -> None:
        """An identifying element the profile removes or empties."""
        setattr(self.ds, keyword, value)
        self.expect(_tag(keyword), "text_removed", value, f"{keyword}/{kind}")

    def text(self, keyword: str, text: FreeText, *, kept: bool, into: Dataset | None = None, path: str = "") -> None:
        """A free-text element; clinical words are scored only where the profile keeps the element."""
        setattr(into if into is not None else self.ds, keyword, text.text)
        full = f"{path}{_tag(keyword)}"
        label = f"{keyword_for_tag(int(path.split('/')[0], 16))}/{keyword}" if path else keyword
        for value, kind in text.removed:
            self.expect(full, "text_removed", value, f"{label}/{kind}")
        if kept:
            for phrase in text.retained:
                self.expect(full, "text_retained", phrase, label)

    def private(self, group: int, creator: str, offset: int, vr: str, value: str, action: str, kind: str) -> None:
        self.ds.private_block(group, creator, create=True).add_new(offset, vr, value)
        self.expect(f"{group:04X}:{creator}:{offset:02X}", action, value, f"private {creator}/{kind}")

    def kept(self, keyword: str, value: object) -> None:
        setattr(self.ds, keyword, value)
        self.expect(_tag(keyword), "tag_retained", "", keyword)

    def date(self, keyword: str, when: date) -> None:
        setattr(self.ds, keyword, f"{when:%Y%m%d}")
        self.expect(_tag(keyword), "date_shifted", f"{when:%Y%m%d}", keyword)

    def uid(self, keyword: str, value: str, *, into: Dataset | None = None, path: str = "") -> None:
        setattr(into if into is not None else self.ds, keyword, value)
        self.expect(f"{path}{_tag(keyword)}", "uid_changed", value, keyword)
        self.expect(f"{path}{_tag(keyword)}", "uid_consistent", value, keyword)


def _dataset(sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    return ds


@dataclass
class _Series:
    """What every instance of one series shares: ids, texts, what is burned in and how."""

    number: int
    uid: str
    frame_of_reference: str
    description: FreeText
    protocol: FreeText
    comments: FreeText
    private_note: FreeText
    text_in_pixels: str = "none"  # none | annotations | phi (as planned; drawn PHI may not fit)
    blocks: list[_Block] = field(default_factory=list)
    inks: tuple[object, object] = (0, 0)
    photometric: str = "MONOCHROME2"
    frame_count: int = 1


def _header(item: _Instance, rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study,
            texts: dict[str, FreeText], series: _Series) -> None:
    ds = item.ds
    item.phi("PatientName", patient.person.dicom, "name")
    ds.PatientID = patient.patient_id
    item.expect(_tag("PatientID"), "patid_consistent", patient.patient_id, "PatientID")
    item.phi("PatientBirthDate", f"{patient.birth:%Y%m%d}", "date")
    item.kept("PatientSex", patient.sex)
    item.kept("PatientAge", f"{min(99, (study.when - patient.birth).days // 365):03d}Y")
    if rng.random() < 0.5:
        item.phi("OtherPatientIDs", patient.other_id, "id")
    if rng.random() < 0.5:
        item.phi("PatientAddress", patient.address, "address")
        item.phi("PatientTelephoneNumbers", patient.phone, "phone")
    if rng.random() < 0.3:
        item.phi("PatientMotherBirthName", patient.mother.dicom, "name")
    item.phi("ReferringPhysicianName", patient.referrer.dicom, "name")
    item.phi("InstitutionName", study.institution.name, "institution")
    item.phi("InstitutionAddress", study.institution.address, "address")
    item.phi("OperatorsName", patient.operator.dicom, "name")
    item.phi("StationName", f"{study.modality}{rng.randrange(1, 9)}-{fold(study.institution.city)[:8].strip()}", "institution")
    item.phi("AccessionNumber", study.accession, "id")
    item.phi("StudyID", study.study_id, "id")
    item.uid("StudyInstanceUID", study.uid)
    item.uid("SeriesInstanceUID", series.uid)
    item.date("StudyDate", study.when)
    item.date("SeriesDate", study.when)
    item.date("ContentDate", study.when)
    ds.StudyTime = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"
    item.kept("Modality", study.modality)
    item.text("StudyDescription", texts["study"], kept=True)
    item.text("SeriesDescription", series.description, kept=True)
    item.text("ProtocolName", series.protocol, kept=True)
    item.text("AdditionalPatientHistory", texts["history"], kept=True)
    item.text("RequestedProcedureDescription", texts["requested"], kept=True)
    item.text("StudyComments", texts["comments"], kept=False)
    item.text("ImageComments", series.comments, kept=False)
    request = Dataset()
    ds.RequestAttributesSequence = Sequence([request])
    path = f"{_tag('RequestAttributesSequence')}/0/"
    item.text("RequestedProcedureDescription", texts["requested"], kept=False, into=request, path=path)
    request.RequestedProcedureID = study.accession
    item.expect(f"{path}{_tag('RequestedProcedureID')}", "text_removed", study.accession, "RequestAttributesSequence/id")
    ds.Manufacturer = study.manufacturer
    if ds.Manufacturer == "GE MEDICAL SYSTEMS":  # GE private identification block (TCIA private tag KB dispositions)
        item.private(0x0009, "GEMS_IDEN_01", 0x02, "SH", f"{study.institution.initials[:6]}{rng.randrange(10, 99)}", "text_removed", "institution")
        item.private(0x0009, "GEMS_IDEN_01", 0xE3, "UI", generate_uid(entropy_srcs=[study.uid, "equipment"]), "uid_changed", "uid")
    elif ds.Manufacturer == "SIEMENS" and series.private_note.removed:
        # a note with PHI in it, in an element the private tag KB deletes: nothing of it may stay
        item.private(0x0019, "SIEMENS MED SMS USG S2000", 0x3B, "LT", series.private_note.text, "text_removed", "note")
    if rng.random() < 0.5:  # a site's own RIS block, unknown to any dictionary
        creator = "NORDLYS RIS 2"
        item.private(0x0031, creator, 0x10, "LO", patient.person.written(rng), "text_removed", "name")
        item.private(0x0031, creator, 0x11, "LO", patient.referrer.written(rng), "text_removed", "name")
    if study.modality in ("CT", "MR") and series.frame_of_reference:
        item.uid("FrameOfReferenceUID", series.frame_of_reference)
        item.kept("SliceThickness", rng.choice(("1.25", "3", "5")))
    if study.modality in ("CT", "CR", "DX", "MG"):
        item.kept("KVP", str(rng.choice((28, 80, 100, 120))))


def _acquisition(item: _Instance, rng: random.Random, study: Study, number: int) -> None:
    """The geometry and acquisition attributes an image of this modality carries."""
    ds = item.ds
    modality = study.modality
    ds.BodyPartExamined = study.body_part
    if modality in ("CT", "MR"):
        item.kept("PixelSpacing", ["0.8", "0.8"])
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-100", "-100", str(5 * number)]
        ds.SliceLocation = str(5 * number)
        ds.PatientPosition, ds.PositionReferenceIndicator, ds.AcquisitionNumber = "HFS", "", 1
    else:
        ds.PatientOrientation = ["A", "F"] if modality in ("CR", "DX") else ["P", "L"] if modality == "MG" else ""
    if modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
        ds.ScanOptions, ds.EchoTrainLength = "", 1
        item.kept("EchoTime", str(rng.randrange(8, 120)))
        ds.RepetitionTime, ds.MagneticFieldStrength = str(rng.randrange(400, 6000)), rng.choice(("1.5", "3"))
    if modality in ("CR", "DX"):
        ds.ViewPosition = rng.choice(("PA", "AP", "LL"))
    if modality in ("DX", "MG"):
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.LossyImageCompression, ds.ImagerPixelSpacing = "00", ["0.15", "0.15"]
        ds.DetectorType, ds.PositionerType, ds.AcquisitionContextSequence = "DIRECT", "", Sequence([])
        ds.AnatomicRegionSequence = Sequence([])
        ds.BurnedInAnnotation = "NO"
    if modality in ("DX", "MG"):
        item.kept("ImageLaterality", rng.choice("LR") if modality == "MG" else "U")
        ds.ViewPosition = rng.choice(("CC", "MLO"))
    if modality == "SC":
        item.kept("ConversionType", "WSD")


def _pixel_module(ds: Dataset, modality: str, frames: list[np.ndarray], photometric: str) -> None:
    first = frames[0]
    ds.Rows, ds.Columns = int(first.shape[0]), int(first.shape[1])
    if first.ndim == 3:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PhotometricInterpretation = photometric
    if modality in ("DX", "MG"):
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelRepresentation = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = "33.3"
    ds.PixelData = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)


def _image(directory: Path, name: str, rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study,
           texts: dict[str, FreeText], series: _Series, number: int, sop_uid: str, referenced: str | None) -> Truth:
    sop_class = UltrasoundMultiFrameImageStorage if series.frame_count > 1 else _SOP_CLASS[study.modality]
    ds = _dataset(sop_class, sop_uid)
    truth = Truth(name, sop_uid, study.modality, text_in_pixels=series.text_in_pixels)
    item = _Instance(ds, truth)
    item.uid("SOPInstanceUID", sop_uid)
    _header(item, rng, vocab, patient, study, texts, series)
    ds.SeriesNumber, ds.InstanceNumber = series.number, number
    ds.ImageType = ["ORIGINAL", "PRIMARY", {"CT": "AXIAL", "MR": "OTHER"}.get(study.modality, "")]
    _acquisition(item, rng, study, number)
    if referenced is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = _SOP_CLASS[study.modality]
        path = f"{_tag('ReferencedImageSequence')}/0/"
        item.uid("ReferencedSOPInstanceUID", referenced, into=ref, path=path)
        ds.ReferencedImageSequence = Sequence([ref])
    frames = []
    for index in range(series.frame_count):
        frame = _base_frame(rng, study.modality)
        for drawn in _burn(frame, series.blocks, series.inks):
            truth.burned_in.append({"frame": index, **drawn.as_json()})
        frames.append(frame)
    if series.photometric == "MONOCHROME1":
        frames = [4095 - f for f in frames]  # stored values: the viewer inverts them back
    _pixel_module(ds, study.modality, frames, series.photometric)
    if series.text_in_pixels == "phi" and not truth.burned_in:
        truth.text_in_pixels = "annotations"  # no PHI block fitted on this image
    truth.pixel_md5 = hashlib.md5(ds.PixelData).hexdigest()
    ds.save_as(directory / name, enforce_file_format=True)
    return truth


def _report(directory: Path, name: str, rng: random.Random, vocab: Vocabulary, patient: Patient, study: Study,
            texts: dict[str, FreeText], series: _Series, sop_uid: str, referenced: tuple[str, str]) -> Truth:
    """A Basic Text SR of the study: findings as TEXT content items, an observer's name; it cites
    one image (`referenced`: that image's series and SOP Instance UIDs)."""
    ds = _dataset(BasicTextSRStorage, sop_uid)
    truth = Truth(name, sop_uid, "SR")
    item = _Instance(ds, truth)
    item.uid("SOPInstanceUID", sop_uid)
    _header(item, rng, vocab, patient, study, texts, series)
    ds.Modality = "SR"
    ds.SeriesNumber, ds.InstanceNumber = series.number, 1
    ds.ContentTime = ds.StudyTime
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    ds.ValueType, ds.ContinuityOfContent, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "SEPARATE", "COMPLETE", "UNVERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    content = []
    for number, finding in enumerate(rng.sample(FINDINGS, 2)):
        text = free_text(rng, vocab, patient, study, finding, phi_chance=0.8, limit=None)
        node = Dataset()
        node.RelationshipType, node.ValueType = "CONTAINS", "TEXT"
        node.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
        item.text("TextValue", text, kept=True, into=node, path=f"{_tag('ContentSequence')}/{number}/")
        content.append(node)
    observer = Dataset()
    observer.RelationshipType, observer.ValueType = "HAS OBS CONTEXT", "PNAME"
    observer.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    observer.PersonName = patient.referrer.dicom
    item.expect(f"{_tag('ContentSequence')}/{len(content)}/{_tag('PersonName')}", "text_removed", patient.referrer.dicom, "ContentSequence/PersonName/name")
    content.append(observer)
    ds.ContentSequence = Sequence(content)
    source = Dataset()
    source.ReferencedSOPClassUID = _SOP_CLASS[study.modality]
    path = f"{_tag('CurrentRequestedProcedureEvidenceSequence')}/0/"
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([source])
    item.uid("StudyInstanceUID", study.uid, into=source, path=path)
    instance = Dataset()
    instance.ReferencedSOPClassUID = _SOP_CLASS[study.modality]
    cited_series = Dataset()
    cited_series.ReferencedSOPSequence = Sequence([instance])
    source.ReferencedSeriesSequence = Sequence([cited_series])
    series_path = f"{path}{_tag('ReferencedSeriesSequence')}/0/"
    item.uid("SeriesInstanceUID", referenced[0], into=cited_series, path=series_path)
    item.uid("ReferencedSOPInstanceUID", referenced[1], into=instance, path=f"{series_path}{_tag('ReferencedSOPSequence')}/0/")
    truth.text_in_pixels = "none"
    ds.save_as(directory / name, enforce_file_format=True)
    return truth


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def generate_corpus(directory: Path, seed: int, *, studies: int = 10) -> list[Truth]:
    """Write `studies` studies (a few instances each) and their ground truth into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    vocab = Vocabulary(rng)
    new_uid = _Uids(seed)
    patients = [_patient(vocab) for _ in range(max(1, studies * 2 // 3))]
    modalities = list(MODALITIES)
    rng.shuffle(modalities)
    truths: list[Truth] = []
    for number in range(studies):
        patient = patients[number % len(patients)]
        modality = modalities[number % len(modalities)]
        when = vocab.exam_date()
        institution = patient.institution if rng.random() < 0.8 else vocab.institution()
        study = Study(modality, new_uid(), when, vocab.accession(when), str(rng.randrange(100000, 999999)), institution,
                      rng.choice(("GE MEDICAL SYSTEMS", "SIEMENS", "Philips", "Canon")), "")
        clinical = study_phrase(rng, modality)
        study.body_part = next(w for w in clinical.split() if w != modality)
        texts = {
            "study": free_text(rng, vocab, patient, study, clinical, phi_chance=0.5, limit=_LO_MAX),
            "history": free_text(rng, vocab, patient, study, rng.choice(HISTORY), phi_chance=0.7, limit=None),
            "requested": free_text(rng, vocab, patient, study, clinical, phi_chance=0.4, limit=_LO_MAX),
            "comments": free_text(rng, vocab, patient, study, rng.choice(HISTORY), phi_chance=0.9, limit=None),
        }
        last_series = None
        last_uid = None
        for series_number in range(1, rng.choice((2, 3, 3))):
            series = _Series(
                series_number, new_uid(), new_uid(),
                free_text(rng, vocab, patient, study, rng.choice(SERIES_NAMES[modality]), phi_chance=0.4, limit=_LO_MAX),
                free_text(rng, vocab, patient, study, f"{clinical.split()[-1]} {rng.choice(SERIES_NAMES[modality])}",
                          phi_chance=0.25, limit=_LO_MAX),
                free_text(rng, vocab, patient, study, rng.choice(HISTORY), phi_chance=0.9, limit=None),
                free_text(rng, vocab, patient, study, rng.choice(FINDINGS), phi_chance=0.9, limit=None),
            )
            roll = rng.random()
            series.text_in_pixels = "none" if roll < 0.34 else "annotations" if roll < 0.5 else "phi"
            if series.text_in_pixels != "none":
                series.blocks = _plan(rng, vocab, patient, study, series.text_in_pixels == "phi")
            series.photometric = ("RGB" if modality in _RGB else "MONOCHROME1" if modality in ("CR", "DX") and rng.random() < 0.5
                                  else "MONOCHROME2")
            series.inks = _inks(modality, rng)
            series.frame_count = rng.choice((1, 3)) if modality == "US" else 1
            for instance in range(rng.randrange(2, 4) if series.frame_count == 1 else 1):
                name = f"s{seed:03d}-st{number:02d}-se{series_number}-i{instance}.dcm"
                sop_uid = new_uid()
                truths.append(_image(directory, name, rng, vocab, patient, study, texts, series, instance + 1, sop_uid, last_uid))
                last_uid = sop_uid
            last_series = series
        if last_series is not None and last_uid is not None and rng.random() < 0.35:
            name = f"s{seed:03d}-st{number:02d}-sr.dcm"
            report = _Series(99, new_uid(), "", last_series.description, last_series.protocol, last_series.comments,
                             last_series.private_note)
            truths.append(_report(directory, name, rng, vocab, patient, study, texts, report, new_uid(), (last_series.uid, last_uid)))
    for truth in truths:
        truth.write(directory)
    (directory / "corpus.json").write_text(json.dumps({"seed": seed, "files": [t.file for t in truths]}))
    return truths


def read_corpus(directory: Path) -> list[Truth]:
    files = json.loads((directory / "corpus.json").read_text())["files"]
    return [Truth.read(directory / f"{name}.json") for name in files]
