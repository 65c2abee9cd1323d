"""MIDI-B-style checks on a de-identified held-out corpus, and the node run in-process to get one.

Header checks: tag_retained, date_shifted, uid_changed, uid_consistent, patid_consistent as
tests/conformance scores them (MIDI-B's definitions); text_removed and text_retained by whole words
with case and diacritics folded (a name token that survives anywhere in the element is a leak; a
clinical phrase must survive whole). Pixel checks are judged by the drawn strokes, never by OCR:
pixels_hidden — at least 99% of a burned-in item's stroke pixels changed; pixels_retained — the
MD5 of PixelData unchanged for an image without burned-in PHI.

An instance the node quarantines counts as hidden for every privacy check, but fails every
retained/consistent/unchanged check: losing an image is a cost too. Failures are counted by
class (action, element, PHI class) — never with values, so the report is free of PHI.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from tests.conformance.score import _element, _passes, _text
from tests.heldout.burn import mask_from_json
from tests.heldout.generate import Check, Truth, contains_word, phi_tokens

HIDDEN_FRACTION = 0.99  # an item is hidden when this share of its stroke pixels changed
PRIVACY_ACTIONS = frozenset({"text_removed", "date_shifted", "uid_changed", "pixels_hidden"})
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Bars:
    """The bars of issue 14 (item 6), in one place: the suite's test and the report use these."""

    midi_b: float = 0.995  # share of MIDI-B checks passed
    hidden: float = 0.99  # share of instances with burned-in PHI whose every item is hidden
    kept: float = 0.99  # share of clinical phrases kept
    unchanged: float = 0.99  # share of images without burned-in PHI whose PixelData is unchanged

    def shortfalls(self, result: "Result") -> list[str]:
        """One PHI-free line per bar the result misses."""
        return [f"{name} {getattr(result, name):.2%} < {bar:.2%}"
                for name, bar in vars(self).items() if getattr(result, name) < bar]


BARS = Bars()


@dataclass
class Run:
    """What a de-identifier made of a corpus: output per file (None: quarantined) and its maps."""

    outputs: dict[str, Dataset | None]
    uid_map: dict[str, str]
    patient_map: dict[str, str]


@dataclass
class Result:
    per_action: Counter[str] = field(default_factory=Counter)  # action -> passed
    totals: Counter[str] = field(default_factory=Counter)  # action -> checks
    failures: Counter[str] = field(default_factory=Counter)  # PHI-free class -> count
    phi_images: int = 0
    phi_images_hidden: int = 0
    clean_images: int = 0
    clean_images_unchanged: int = 0
    instances: int = 0
    quarantined: int = 0

    def add(self, other: "Result") -> "Result":
        for name in ("per_action", "totals", "failures"):
            getattr(self, name).update(getattr(other, name))
        for name in ("phi_images", "phi_images_hidden", "clean_images", "clean_images_unchanged", "instances", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def tally(self, action: str, ok: bool, failure: str) -> None:
        self.totals[action] += 1
        if ok:
            self.per_action[action] += 1
        else:
            self.failures[failure] += 1

    @property
    def midi_b(self) -> float:
        return _share(sum(self.per_action.values()), sum(self.totals.values()))

    @property
    def hidden(self) -> float:
        return _share(self.phi_images_hidden, self.phi_images)

    @property
    def kept(self) -> float:
        return _share(self.per_action["text_retained"], self.totals["text_retained"])

    @property
    def unchanged(self) -> float:
        return _share(self.clean_images_unchanged, self.clean_images)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def text_passes(check: Check, text: str) -> bool:
    if check.action == "text_removed":
        kind = check.where.rsplit("/", 1)[-1]
        return not any(contains_word(text, p) for p in [check.value, *phi_tokens(check.value, kind)])
    return contains_word(text, check.value)  # text_retained


def _check(check: Check, output: Dataset, run: Run) -> bool:
    element = _element(output, check.path)
    if check.action in ("text_removed", "text_retained"):
        return text_passes(check, _text(element))
    return _passes(check, element, run.uid_map, run.patient_map)  # type: ignore[arg-type]


def _frames(ds: Dataset) -> np.ndarray:
    pixels = ds.pixel_array
    return pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]


def _hidden_share(item: dict, before: np.ndarray, after: np.ndarray) -> float:  # type: ignore[type-arg]
    (top, left, height, width), mask = mask_from_json(item)
    frame = item["frame"]
    was = before[frame, top:top + height, left:left + width][mask]
    now = after[frame, top:top + height, left:left + width][mask]
    differs = was != now
    if differs.ndim == 2:
        differs = differs.any(axis=1)
    return float(differs.mean()) if differs.size else 1.0


def _score_pixels(truth: Truth, source: Path, output: Dataset | None, result: Result) -> None:
    if truth.modality == "SR":
        return
    if not truth.burned_in:
        result.clean_images += 1
        unchanged = output is not None and "PixelData" in output and hashlib.md5(output.PixelData).hexdigest() == truth.pixel_md5
        result.clean_images_unchanged += unchanged
        reason = "quarantined" if output is None else f"{truth.text_in_pixels} {truth.modality}"
        result.tally("pixels_retained", unchanged, f"pixels_retained ({reason})")
        return
    result.phi_images += 1
    after = _frames(output) if output is not None and "PixelData" in output else None
    before = _frames(pydicom.dcmread(source))
    every = True
    for item in truth.burned_in:
        if after is None or after.shape != before.shape:
            hidden = True  # quarantined, or the pixels are gone or remade: nothing of the item is left
        else:
            hidden = _hidden_share(item, before, after) >= HIDDEN_FRACTION
        every &= hidden
        result.tally("pixels_hidden", hidden, f"pixels_hidden {item['layout']}/{item['kind']} {truth.modality}")
    result.phi_images_hidden += every


def score(corpus: Path, truths: list[Truth], run: Run) -> Result:
    result = Result()
    for truth in truths:
        output = run.outputs.get(truth.file)
        result.instances += 1
        result.quarantined += output is None
        for check in truth.checks:
            if output is None:
                ok = check.action in PRIVACY_ACTIONS
                result.tally(check.action, ok, f"{check.action} (quarantined)")
            else:
                result.tally(check.action, _check(check, output, run), f"{check.action} {check.where}")
        _score_pixels(truth, corpus / truth.file, output, result)
    return result


# --- de-identifiers to score -------------------------------------------------------------------

def run_node(corpus: Path, truths: list[Truth], workdir: Path) -> Run:
    """The node's de-identification as the worker runs it: the shipped TCIA profile and pixel
    policy, a temporary SQLite mapping store, maps exported as MIDI-B's CSVs."""
    from node.deid.metadata import MetadataDeidentifier
    from node.deid.pipeline import DeidentificationError, Deidentifier
    from node.deid.pixels import PixelCleaner
    from node.deid.profile import load_profile
    from node.deid.pseudonyms import KeyedDerivation
    from node.persist.db import make_engine, make_session_factory, upgrade
    from node.persist.exports import export
    from node.persist.mappings import MappingStore, OriginalCipher, RecordingMappings, Scope

    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'mappings.db'}"
    upgrade(url)
    engine = make_engine(url)
    secret = b"held-out-probe-secret"
    store = MappingStore(make_session_factory(engine), KeyedDerivation(secret), OriginalCipher(secret))
    deidentifier = Deidentifier(MetadataDeidentifier(load_profile(REPO / "config" / "profiles" / "tcia.yaml")),
                                PixelCleaner.from_policy_file(REPO / "config" / "pixel-policy.yaml"))
    outputs: dict[str, Dataset | None] = {}
    try:
        for truth in truths:
            mappings = RecordingMappings(store)
            try:
                outcome = deidentifier.run_file(corpus / truth.file, mappings)
            except DeidentificationError:
                outputs[truth.file] = None
                continue
            mappings.commit(study_uid=outcome.new_study_instance_uid)
            outputs[truth.file] = pydicom.dcmread(io.BytesIO(outcome.data))
        maps = {}
        for kind in ("uids", "patients"):
            out = io.StringIO()
            export(store, kind, Scope(), out)
            maps[kind] = {row["id_old"]: row["id_new"] for row in csv.DictReader(io.StringIO(out.getvalue()))}
    finally:
        engine.dispose()
    return Run(outputs, maps["uids"], maps["patients"])


def run_function(corpus: Path, truths: list[Truth], change: Callable[[Dataset], None]) -> Run:
    """A stand-in de-identifier that applies `change` to each instance and keeps every id as it was
    (the maps say each UID and Patient ID maps to itself): for proving the scorer can fail."""
    outputs: dict[str, Dataset | None] = {}
    for truth in truths:
        ds = pydicom.dcmread(corpus / truth.file)
        change(ds)
        outputs[truth.file] = ds
    ids = {c.value: c.value for t in truths for c in t.checks if c.action in ("uid_consistent", "patid_consistent")}
    return Run(outputs, ids, ids)
