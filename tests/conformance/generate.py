"""A MIDI-B style conformance corpus: real test files carrying injected synthetic PHI, plus an answer key.

Every injected value is synthetic (TESTPATIENT^..., 555-01xx numbers, example.invalid mail) and
put where real PHI hides: patient and study attributes, free-text descriptions that also hold
clinical words, nested sequences, referenced UIDs, and private blocks with and without PHI.
Each injection records the check the MIDI-B scorer would run on the output (the action names
are MIDI-B's): text_removed, text_retained, tag_retained, date_shifted, uid_changed,
uid_consistent, patid_consistent. The key is written as CSV (MIDI-B's form) and JSON.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

SOURCES = (
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "test-SR.dcm", "JPEG2000.dcm",
    "SC_rgb.dcm", "emri_small.dcm", "693_J2KR.dcm", "liver.dcm", "waveform_ecg.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm", "US1_J2KR.dcm", "SC_rgb_rle.dcm",
)
COPIES = 2  # each source twice, for two different patients
UID_ROOT = "1.2.826.0.1.3680043.10.1475"  # a test root; the originals are synthetic too

# Private elements whose disposition TCIA's knowledge base gives (config/reference/tcia-private-tag-kb-*.csv).
SAFE_PRIVATE = (0x0019, "GEMS_ACQU_01", 0x23, "DS", "12.5")  # k: keep
UID_PRIVATE = (0x0029, "SIEMENS SYNGO ADVANCED PRESENTATION", 0x09, "UI")  # h: hash the UID
DATE_PRIVATE = (0x0019, "GEMS_ACQU_01", 0x9D, "DT")  # o: offset the date
PHI_PRIVATE = (0x0011, "SYNTHETIC PHI VENDOR 1", 0x10, "LO")  # unknown creator: delete
PHI_PRIVATE_SEQUENCE = (0x0011, "SYNTHETIC PHI VENDOR 1", 0x11, "SQ")  # a sequence under it
UNLISTED_IN_SAFE_BLOCK = (0x0019, "GEMS_ACQU_01", 0xF7, "LO")  # known creator, element not listed: delete


@dataclass(frozen=True)
class SyntheticPatient:
    name: str
    patient_id: str
    birth_date: str
    age: str
    family: str
    given: str


PATIENTS = (
    SyntheticPatient("TESTPATIENT^ALPHA", "TEST-ALPHA-0001", "19610307", "062Y", "TESTPATIENT", "ALPHA"),
    SyntheticPatient("DOE^JANE^Q", "TEST-JANE-0002", "19291122", "094Y", "DOE", "JANE"),
    SyntheticPatient("SYNTHETIC^BRAVO", "TEST-BRAVO-0003", "19880430", "035Y", "SYNTHETIC", "BRAVO"),
)


@dataclass(frozen=True)
class Check:
    """One answer-key row: in the instance with this original SOP Instance UID, at this path."""

    instance: str
    path: str  # "00081030", "0040A730/0/0040A160", private "0019:GEMS_ACQU_01:23"
    action: str
    value: str


@dataclass(frozen=True)
class AnswerKey:
    checks: tuple[Check, ...]
    files: tuple[str, ...]

    def write(self, directory: Path) -> None:
        with (directory / "answer_key.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["instance", "path", "action", "value"])
            writer.writeheader()
            writer.writerows(asdict(c) for c in self.checks)
        (directory / "answer_key.json").write_text(
            json.dumps({"files": list(self.files), "checks": [asdict(c) for c in self.checks]}, indent=1)
        )

    @classmethod
    def read(cls, directory: Path) -> AnswerKey:
        raw = json.loads((directory / "answer_key.json").read_text())
        return cls(tuple(Check(**c) for c in raw["checks"]), tuple(raw["files"]))


class _Injector:
    """Puts synthetic PHI into one dataset and writes down what the scorer must find afterwards."""

    def __init__(self, ds: Dataset, instance: str) -> None:
        self.ds = ds
        self.instance = instance
        self.checks: list[Check] = []

    def expect(self, path: str, action: str, value: str) -> None:
        self.checks.append(Check(self.instance, path, action, value))

    def put(self, keyword: str, value: object, *checks: tuple[str, str], into: Dataset | None = None, path: str = "") -> None:
        target = self.ds if into is None else into
        setattr(target, keyword, value)
        tag = f"{target.data_element(keyword).tag:08X}"  # type: ignore[union-attr]
        for action, expected in checks:
            self.expect(f"{path}{tag}", action, expected)

    def private(self, spec: tuple, value: object, *checks: tuple[str, str]) -> None:
        group, creator, element, vr = spec[:4]
        self.ds.private_block(group, creator, create=True).add_new(element, vr, value)
        for action, expected in checks:
            self.expect(f"{group:04X}:{creator}:{element:02X}", action, expected)


def _uid(rng: random.Random) -> str:
    return f"{UID_ROOT}.{rng.randrange(10**12, 10**13)}.{rng.randrange(10**8)}"


def _us_date(da: str) -> str:
    return f"{da[4:6]}/{da[6:8]}/{da[:4]}"


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _description(patient: SyntheticPatient, da: str, number: int) -> tuple[str, str, tuple[str, ...]]:
    """A study description mixing clinical words with the patient's name and date, in one of
    the forms people type them: (clinical part, whole text, PHI parts)."""
    family, given = patient.family, patient.given
    month = _MONTHS[int(da[4:6]) - 1]
    forms = (
        ("CT CHEST W CONTRAST", f"CT CHEST W CONTRAST {family} {given} {_us_date(da)}", (family, given, _us_date(da))),
        ("MRI BRAIN W/WO", f"MRI BRAIN W/WO for {given.title()} {family.title()} {da[6:]}-{month}-{da[:4]}", (family, given, f"{da[6:]}-{month}-{da[:4]}")),
        ("CTA HEAD", f"{family.lower()}, {given.lower()}: CTA HEAD {da[:4]}-{da[4:6]}-{da[6:]}", (family, given, f"{da[:4]}-{da[4:6]}-{da[6:]}")),
        ("PET CT WHOLE BODY", f"PET CT WHOLE BODY {patient.patient_id} {da}", (patient.patient_id, da)),
    )
    return forms[number % len(forms)]


def _patient(inj: _Injector, patient: SyntheticPatient) -> None:
    removed = "text_removed"
    inj.put("PatientName", patient.name, (removed, patient.name))
    inj.put("PatientID", patient.patient_id, ("patid_consistent", patient.patient_id), (removed, patient.patient_id))
    inj.put("PatientBirthDate", patient.birth_date, (removed, patient.birth_date))
    inj.put("PatientAge", patient.age, (removed, patient.age) if int(patient.age[:3]) > 89 else ("tag_retained", patient.age))
    inj.put("PatientSex", "O", ("tag_retained", "O"))
    inj.put("OtherPatientNames", f"{patient.family}^{patient.given}^MIDDLE", (removed, f"{patient.family}^{patient.given}"))
    inj.put("PatientAddress", "1234 Synthetic Street, Testville, ZZ 00000", (removed, "1234 Synthetic Street"))
    inj.put("PatientTelephoneNumbers", "555-0100", (removed, "555-0100"))
    inj.put("PatientMotherBirthName", "TESTMOTHER^GAMMA", (removed, "TESTMOTHER^GAMMA"))


def _study(inj: _Injector, patient: SyntheticPatient, study_date: str, number: int) -> None:
    removed = "text_removed"
    inj.put("AccessionNumber", f"TESTACC{number:05d}", (removed, f"TESTACC{number:05d}"))
    inj.put("StudyID", f"TS{number:04d}", (removed, f"TS{number:04d}"))
    inj.put("ReferringPhysicianName", "TESTDOCTOR^REFERRING", (removed, "TESTDOCTOR^REFERRING"))
    inj.put("PerformingPhysicianName", "TESTDOCTOR^PERFORMING", (removed, "TESTDOCTOR^PERFORMING"))
    inj.put("OperatorsName", "TESTOPERATOR^DELTA", (removed, "TESTOPERATOR^DELTA"))
    inj.put("InstitutionName", "Synthetic General Hospital", (removed, "Synthetic General Hospital"))
    inj.put("InstitutionAddress", "99 Example Road, Testville", (removed, "99 Example Road"))
    inj.put("StationName", "TESTSTATION07", (removed, "TESTSTATION07"))
    for keyword in ("StudyDate", "SeriesDate", "ContentDate"):
        inj.put(keyword, study_date, ("date_shifted", study_date))
    inj.put("AcquisitionDateTime", f"{study_date}093015.123456+0100", ("date_shifted", study_date))
    clinical, description, phi = _description(patient, study_date, number)
    inj.put("StudyDescription", description, ("text_retained", clinical), *((removed, p) for p in phi))
    inj.put("StudyTime", "093015", ("tag_retained", "093015"))
    inj.put(
        "SeriesDescription", "AXIAL T1 POST by Dr. Testdoctor",
        ("text_retained", "AXIAL T1 POST"), (removed, "Testdoctor"),
    )
    inj.put(
        "ProtocolName", "ROUTINE BRAIN at Synthetic General Hospital",
        ("text_retained", "ROUTINE BRAIN"), (removed, "Synthetic General Hospital"),
    )
    inj.put(
        "ImageComments", "Questions: call 555-010-9999 or testdoc@example.invalid",
        (removed, "555-010-9999"), (removed, "testdoc@example.invalid"),
    )
    inj.put(
        "AdditionalPatientHistory",
        f"Seen {study_date[:4]}-{study_date[4:6]}-{study_date[6:]}, MRN {patient.patient_id}, headache",
        ("text_retained", "headache"), (removed, patient.patient_id),
        (removed, f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"),
    )


def _nested(inj: _Injector, patient: SyntheticPatient, study_date: str, referenced: str) -> None:
    removed = "text_removed"
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    reference.ReferencedSOPInstanceUID = referenced
    inj.put("ReferencedImageSequence", Sequence([reference]))
    inj.expect("00081140/0/00081155", "uid_changed", referenced)
    inj.expect("00081140/0/00081155", "uid_consistent", referenced)
    inj.expect("00081140/0/00081150", "tag_retained", "1.2.840.10008.5.1.4.1.1.2")
    context = Dataset()
    inj.put("PersonName", patient.name, into=context)
    inj.put("TextValue", f"Patient {patient.given} {patient.family} reports chest pain", into=context)
    inj.put("AcquisitionContextSequence", Sequence([context]))
    inj.expect("00400555/0/0040A123", removed, patient.name)
    inj.expect("00400555/0/0040A160", removed, patient.family)
    inj.expect("00400555/0/0040A160", "text_retained", "chest pain")
    other_id = Dataset()
    inj.put("PatientID", f"{patient.patient_id}-OLD", into=other_id)
    inj.put("IssuerOfPatientID", "SYNTHETIC GENERAL MRN", into=other_id)
    inj.put("OtherPatientIDsSequence", Sequence([other_id]))
    inj.expect("00101002/0/00100020", removed, f"{patient.patient_id}-OLD")
    inj.expect("00101002/0/00100021", removed, "SYNTHETIC GENERAL MRN")
    inj.put(
        "PerformedProcedureStepDescription", f"CT ABDOMEN PELVIS for {patient.given.title()} {patient.family.title()}",
        ("text_retained", "CT ABDOMEN PELVIS"), (removed, patient.family), (removed, patient.given),
    )
    finding = Dataset()
    finding.ValueType = "TEXT"
    inj.put("TextValue", f"Findings discussed with Dr. Testdoctor on {study_date[4:6]}/{study_date[6:]}/{study_date[:4]}", into=finding)
    inj.put("DateTime", f"{study_date}101500", into=finding)
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = Sequence([finding])
    inj.put("ContentSequence", Sequence([container]))
    text_path = "0040A730/0/0040A730/0/0040A160"
    inj.expect(text_path, "text_retained", "Findings discussed with")
    inj.expect(text_path, removed, "Testdoctor")
    inj.expect(text_path, removed, f"{study_date[4:6]}/{study_date[6:]}/{study_date[:4]}")
    inj.expect("0040A730/0/0040A730/0/0040A120", "date_shifted", study_date)
    request = Dataset()
    inj.put("RequestedProcedureDescription", "CT ABDOMEN ordered by Dr. Testdoctor 555-010-2222", into=request)
    inj.put("AccessionNumber", "TESTNESTEDACC9", into=request)
    inj.put("RequestedProcedureID", "TESTRPID77", into=request)
    inj.put("RequestAttributesSequence", Sequence([request]))
    inj.expect("00400275/0/00321060", removed, "Testdoctor")
    inj.expect("00400275/0/00321060", removed, "555-010-2222")
    inj.expect("00400275/0/00080050", removed, "TESTNESTEDACC9")
    inj.expect("00400275/0/00401001", removed, "TESTRPID77")


def _uids(inj: _Injector, study: str, series: str, instance: str, frame: str) -> None:
    for keyword, value in (("StudyInstanceUID", study), ("SeriesInstanceUID", series), ("SOPInstanceUID", instance), ("FrameOfReferenceUID", frame)):
        inj.put(keyword, value, ("uid_changed", value), ("uid_consistent", value))
    inj.ds.file_meta.MediaStorageSOPInstanceUID = instance
    inj.expect("00080016", "tag_retained", str(inj.ds.SOPClassUID))


def _private(inj: _Injector, patient: SyntheticPatient, study_date: str, private_uid: str) -> None:
    inj.private(SAFE_PRIVATE, SAFE_PRIVATE[4], ("tag_retained", SAFE_PRIVATE[4]))
    inj.private(UID_PRIVATE, private_uid, ("uid_changed", private_uid), ("uid_consistent", private_uid))
    inj.private(DATE_PRIVATE, f"{study_date}101500", ("date_shifted", study_date))
    inj.private(PHI_PRIVATE, f"{patient.name} {patient.patient_id}", ("text_removed", patient.name), ("text_removed", patient.patient_id))
    inj.private(UNLISTED_IN_SAFE_BLOCK, patient.name, ("text_removed", patient.name))
    nested = Dataset()
    nested.PatientName = patient.name
    inj.private(PHI_PRIVATE_SEQUENCE, Sequence([nested]))
    inj.expect(f"{PHI_PRIVATE_SEQUENCE[0]:04X}:{PHI_PRIVATE_SEQUENCE[1]}:{PHI_PRIVATE_SEQUENCE[2]:02X}/0/00100010", "text_removed", patient.name)


def _strip_existing_private(ds: Dataset) -> None:
    """Real vendor blocks stay, except where they would collide with the injected creators."""
    for spec in (SAFE_PRIVATE, UID_PRIVATE, DATE_PRIVATE, PHI_PRIVATE, PHI_PRIVATE_SEQUENCE, UNLISTED_IN_SAFE_BLOCK):
        try:
            block = ds.private_block(spec[0], spec[1])
        except KeyError:
            continue
        tag = block.get_tag(spec[2])
        if tag in ds:
            del ds[tag]


def generate_corpus(out_dir: Path, seed: int = 0) -> AnswerKey:
    """Write the corpus under out_dir (one .dcm per instance) and its answer key; return the key."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    studies = {p.patient_id: (_uid(rng), _uid(rng), _uid(rng), f"20{rng.randrange(10, 24):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}") for p in PATIENTS}
    checks: list[Check] = []
    files: list[str] = []
    previous: dict[str, str] = {}
    number = 0
    for copy_index in range(COPIES):
        for source_index, name in enumerate(SOURCES):
            patient = PATIENTS[(source_index + copy_index) % len(PATIENTS)]
            study, frame, private_uid, study_date = studies[patient.patient_id]
            ds = pydicom.dcmread(get_testdata_file(name))
            instance = _uid(rng)
            inj = _Injector(ds, instance)
            _strip_existing_private(ds)
            _uids(inj, study, _uid(rng), instance, frame)
            _patient(inj, patient)
            _study(inj, patient, study_date, number)
            _nested(inj, patient, study_date, previous.get(patient.patient_id, study))
            _private(inj, patient, study_date, private_uid)
            previous[patient.patient_id] = instance
            file_name = f"{number:03d}_{Path(name).stem}.dcm"
            ds.save_as(out_dir / file_name, enforce_file_format=True)
            checks.extend(inj.checks)
            files.append(file_name)
            number += 1
    key = AnswerKey(tuple(checks), tuple(files))
    key.write(out_dir)
    return key
