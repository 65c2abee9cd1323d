"""The MIDI-B checks, applied to de-identified output and the node's exported mapping CSVs.

Output files are found by SOP Instance UID (the UID map says what each original became), so
the scorer works on any folder of DICOM files: written in-process, or fetched from Orthanc.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from tests.conformance.generate import AnswerKey, Check

_TOKENS = re.compile(r"[A-Za-z]{3,}|\d{5,}")
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_UID = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*")


@dataclass(frozen=True)
class Score:
    per_action: dict[str, tuple[int, int]]  # action -> (passed, total)
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> int:
        return sum(p for p, _ in self.per_action.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.per_action.values())

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def table(self) -> str:
        rows = [f"{a:18s} {p:5d}/{t:<5d} {p / t:8.3%}" for a, (p, t) in sorted(self.per_action.items())]
        return "\n".join(rows + [f"{'all':18s} {self.passed:5d}/{self.total:<5d} {self.fraction:8.3%}"])


def read_map(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["id_old"]: row["id_new"] for row in csv.DictReader(handle)}


def _index(output_dir: Path) -> dict[str, Dataset]:
    found: dict[str, Dataset] = {}
    for path in sorted(output_dir.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not every file in an export folder is DICOM
            continue
        if "SOPInstanceUID" in ds:
            found[str(ds.SOPInstanceUID)] = ds
    return found


def _element(ds: Dataset, path: str) -> DataElement | None:
    current: Dataset = ds
    parts = path.split("/")
    for position, part in enumerate(parts):
        if part.isdigit() and len(part) < 8:  # an item index, consumed with its sequence
            continue
        if ":" in part:
            group, creator, offset = part.split(":")
            try:
                element = current.get_private_item(int(group, 16), int(offset, 16), creator)
            except KeyError:
                return None
        else:
            element = current.get(int(part, 16))
        if element is None:
            return None
        if position + 1 < len(parts):
            if element.VR == "UN":  # a sequence in an implicit VR private block: search its bytes
                return element
            index = int(parts[position + 1])
            if element.VR != "SQ" or len(element.value) <= index:
                return None
            current = element.value[index]
            continue
        return element
    return None


def _text(element: DataElement | None) -> str:
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return text.rstrip("\x00 ")  # UN values (implicit VR private elements) keep their padding


def _valid_date(text: str) -> bool:
    match = _DATE.match(text)
    if match is None:
        return False
    year, month, day = (int(g) for g in match.groups())
    return 1 <= month <= 12 and 1 <= day <= 31 and year > 1800


def _passes(check: Check, element: DataElement | None, uid_map: dict[str, str], patient_map: dict[str, str]) -> bool:
    text = _text(element)
    upper = text.upper()
    if check.action == "text_removed":
        phrases = [check.value, *_TOKENS.findall(check.value)]
        return not any(p.upper() in upper for p in phrases if p)
    if check.action == "text_retained":
        return check.value.upper() in upper
    if check.action == "tag_retained":
        return bool(text.strip())
    if check.action == "date_shifted":
        return bool(text) and check.value not in text and _valid_date(text)
    if check.action == "uid_changed":
        return bool(text) and text != check.value and _UID.fullmatch(text) is not None and len(text) <= 64
    if check.action == "uid_consistent":
        return bool(text) and uid_map.get(check.value) == text
    if check.action == "patid_consistent":
        return bool(text) and patient_map.get(check.value) == text
    raise ValueError(f"unknown action {check.action!r}")


def score(output_dir: Path, uid_map_csv: Path, patient_map_csv: Path, answer_key: AnswerKey) -> Score:
    uid_map = read_map(uid_map_csv)
    patient_map = read_map(patient_map_csv)
    outputs = _index(output_dir)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    failures = []
    for number, check in enumerate(answer_key.checks):
        ds = outputs.get(uid_map.get(check.instance, ""))
        ok = ds is not None and _passes(check, _element(ds, check.path), uid_map, patient_map)
        tally[check.action][1] += 1
        if ok:
            tally[check.action][0] += 1
        else:
            shown = _text(_element(ds, check.path)) if ds is not None else "<no output instance>"
            failures.append(f"{check.action} {check.path} in #{number}: now {shown[:80]!r}")
    return Score({a: (p, t) for a, (p, t) in tally.items()}, tuple(failures))
