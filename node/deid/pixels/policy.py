"""The pixel policy: which images get which treatment, read from config/pixel-policy.yaml.

Code only interprets the policy; what is skipped, detected or always read, and whether all text
or only PHI-matching text is masked, lives in the file so sites can tune it without a release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.dataset import Dataset

from node.deid.pixels.outcome import PixelPolicyError
from node.deid.pixels.regions import RegionRule, attribute_text, load_region_rules
from node.deid.pixels.vocabulary import Vocabulary, load_vocabulary


class Action(str, Enum):
    SKIP = "skip"  # no text search (region rules still apply)
    DETECT = "detect"  # the cheap detector decides where OCR runs
    OCR = "ocr"  # OCR whole frames as well as detected regions


class MaskScope(str, Enum):
    PHI = "phi"  # only text matching this instance's PHI or a PHI pattern
    ALL_TEXT = "all_text"  # every region OCR reads text in
    # Deny by default: every line of text goes, label and value, unless all it says is known to be
    # safe (the policy's vocabulary: markers, units, values, annotation words of the modality).
    DENY = "deny"
    # Ultrasound: every text candidate outside the image areas the instance declares (Sequence of
    # Ultrasound Regions), unread; inside them (or without that sequence) as "deny".
    ALL_TEXT_OUTSIDE_IMAGE = "all_text_outside_image"


class ReaderKind(str, Enum):
    """A whole-frame text reader (readers.py)."""

    RAPIDOCR = "rapidocr"  # PP-OCRv4 detection and recognition, onnxruntime
    TESSERACT = "tesseract"  # Tesseract 5 in-process


class Rendering(str, Enum):
    """How a region is shown to tesseract (always as dark text on a light ground)."""

    STROKES = "strokes"  # the detector's stroke pixels alone: background gone
    GREY = "grey"  # the grey image, text made dark
    INVERTED = "inverted"  # the grey image the other way


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Signature(_Strict):
    """Every listed field must match; list fields match if any entry matches (case-insensitive)."""

    modality: tuple[str, ...] = ()
    sop_class_uid: tuple[str, ...] = ()
    image_type_contains: tuple[str, ...] = ()
    manufacturer_contains: tuple[str, ...] = ()
    model_contains: tuple[str, ...] = ()
    rows: int | None = None
    columns: int | None = None
    burned_in_annotation: tuple[str, ...] = ()

    def matches(self, ds: Dataset) -> bool:
        tests = (
            (self.modality, "Modality", _equals),
            (self.sop_class_uid, "SOPClassUID", _equals),
            (self.image_type_contains, "ImageType", _contains),
            (self.manufacturer_contains, "Manufacturer", _contains),
            (self.model_contains, "ManufacturerModelName", _contains),
            (self.burned_in_annotation, "BurnedInAnnotation", _equals),
        )
        for wanted, keyword, test in tests:
            if wanted and not any(test(attribute_text(ds, keyword), w) for w in wanted):
                return False
        return all(
            size is None or str(size) == attribute_text(ds, keyword)
            for size, keyword in ((self.rows, "Rows"), (self.columns, "Columns"))
        )


def _equals(actual: str | None, wanted: str) -> bool:
    return actual is not None and actual.strip().upper() == wanted.upper()


def _contains(actual: str | None, wanted: str) -> bool:
    return actual is not None and wanted.upper() in actual.upper()


class Rule(_Strict):
    name: str = Field(min_length=1)
    when: Signature
    action: Action
    mask: MaskScope = MaskScope.DENY


class Treatment(_Strict):
    action: Action = Action.DETECT
    mask: MaskScope = MaskScope.DENY


class DetectorSettings(_Strict):
    min_text_height: int = Field(default=4, ge=2)
    max_text_height: int = Field(default=64, ge=4)
    max_stroke_width: int = Field(default=6, ge=1)
    min_contrast: int = Field(default=48, ge=1, le=255)
    min_text_contrast: int = Field(default=96, ge=1, le=255)
    # Fainter ink counts where the background is quiet: contrast at least this, and at least
    # `quiet_background_ratio` times the background's standard deviation around the candidate.
    quiet_text_contrast: int = Field(default=255, ge=1, le=255)
    quiet_background_ratio: float = Field(default=4.0, gt=0)
    min_stroke_fill: float = Field(default=0.08, gt=0, le=1)
    ink_tolerance: int = Field(default=12, ge=0, le=255)
    min_ink_share: float = Field(default=0.5, gt=0, le=1)
    highlight_fraction: float = Field(default=0.25, gt=0, le=1)
    # In a dark frame, dark strokes count where their surroundings are at least this light (8-bit
    # display): dark text printed on a light label.
    label_ground: int = Field(default=192, ge=1, le=255)


class OcrSettings(_Strict):
    target_text_height: int = Field(default=40, ge=10)
    max_upscale: float = Field(default=5.0, ge=1)
    min_confidence: float = Field(default=0.0, ge=0, le=100)
    full_frames: int = Field(default=3, ge=1)  # frames the whole-frame reader reads, spread over a loop
    readings: tuple[Rendering, ...] = Field(default=(Rendering.STROKES, Rendering.GREY), min_length=1)
    # Candidates at least this tall (px) are read in the first rendering only, upscaled to
    # `large_text_height`: tesseract reads text of that size reliably, while small text needs
    # the larger upscale, and a second rendering is a second chance.
    single_reading_from: int = Field(default=1000, ge=1)
    large_text_height: int | None = Field(default=None, ge=10)  # None: target_text_height
    page_segmentation: int = Field(default=11, ge=0, le=13)  # tesseract --psm
    tesseract_options: dict[str, str | int] = {}  # tesseract -c name=value


class TextPattern(_Strict):
    name: str
    regex: str
    score: float = Field(default=0.6, ge=0, le=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class MatchSettings(_Strict):
    min_term_length: int = Field(default=2, ge=1)
    exact_up_to: int = Field(default=3, ge=1)  # terms this short must match exactly
    edits_per_char: float = Field(default=0.25, ge=0, le=0.5)
    patterns: tuple[TextPattern, ...] = ()
    presidio_entities: tuple[str, ...] = ()
    presidio_min_score: float = Field(default=0.5, ge=0, le=1)


class MaskSettings(_Strict):
    margin_fraction: float = Field(default=0.2, ge=0, le=1)  # of the text height
    min_margin: int = Field(default=1, ge=0)
    # Text whose letters are at most this tall (px) is masked unread, where the detector sees a
    # line of at least `unreadable_min_letters` letters of one height: OCR misreads it, so PHI
    # matching cannot be relied on there. 0: off (such text is read and matched like any other).
    unreadable_height: int = Field(default=0, ge=0)
    unreadable_min_letters: int = Field(default=4, ge=2)


class VerifySettings(_Strict):
    full_frames: int = Field(default=1, ge=0)  # redacted frames re-read whole, besides regions
    full_frame_actions: tuple[Action, ...] = (Action.DETECT, Action.OCR)  # ... for instances of these actions
    # PHI the verification reads in a detected region is masked and verified again, this many
    # times, before the instance fails closed: a new look at a line may get right what the first
    # reading garbled. PHI read on a whole frame always fails closed (the detector missed text).
    remask_rounds: int = Field(default=1, ge=0)


class ReaderSettings(_Strict):
    """Which reader reads whole frames in the search, and which takes the second look after
    masking (readers.py); a different one, so what one model misses the other may see."""

    whole_frame: ReaderKind = ReaderKind.RAPIDOCR
    second_look: ReaderKind = ReaderKind.TESSERACT
    threads: int = Field(default=1, ge=1)  # onnxruntime intra-op threads per worker process
    # Whole frames are read where the action is "ocr" (ocr.full_frames of them), and, for
    # "detect", on up to this many frames where the detector found a candidate; 0: none.
    detected_frames: int = Field(default=0, ge=0)


class DenySettings(_Strict):
    # What may stay, relative to the policy file; none: nothing is known to be safe, all text goes.
    vocabulary: Path | None = None
    # Readings less sure than this (0-1; tesseract's confidence /100, PP-OCR's score) are uncertain:
    # their line is masked, whatever it seems to say.
    min_confidence: float = Field(default=0.4, ge=0, le=1)
    # A detector candidate that is no line of letters counts as text only where it reads this
    # surely: anatomy and speckle the detector lets through read as short junk, unsurely.
    text_confidence: float = Field(default=0.6, ge=0, le=1)


class PolicyFile(_Strict):
    regions: Path | None = None
    readers: ReaderSettings = ReaderSettings()
    deny: DenySettings = DenySettings()
    default: Treatment = Treatment()
    rules: tuple[Rule, ...] = ()
    detector: DetectorSettings = DetectorSettings()
    ocr: OcrSettings = OcrSettings()
    matching: MatchSettings = MatchSettings()
    masking: MaskSettings = MaskSettings()
    verify: VerifySettings = VerifySettings()


@dataclass(frozen=True)
class Decision:
    action: Action
    mask: MaskScope
    rule: str
    modality: str = ""  # the instance's, upper-case: which annotation words may stay (vocabulary)


@dataclass(frozen=True)
class PixelPolicy:
    settings: PolicyFile
    region_rules: tuple[RegionRule, ...]
    vocabulary: Vocabulary

    def decide(self, ds: Dataset) -> Decision:
        """First matching rule wins; BurnedInAnnotation=YES always means OCR, whatever a rule says."""
        modality = (attribute_text(ds, "Modality") or "").strip().upper()
        decision = Decision(self.settings.default.action, self.settings.default.mask, "default", modality)
        for rule in self.settings.rules:
            if rule.when.matches(ds):
                decision = Decision(rule.action, rule.mask, rule.name, modality)
                break
        if _equals(attribute_text(ds, "BurnedInAnnotation"), "YES"):
            return replace(decision, action=Action.OCR)
        return decision


def load_policy(path: Path) -> PixelPolicy:
    """Read and validate the policy and the region library it names (relative to the policy file)."""
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PixelPolicyError(f"{path}: cannot read pixel policy ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise PixelPolicyError(f"{path}: the top level must be a mapping")
    try:
        settings = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        raise PixelPolicyError(f"{path}: {_describe(exc, raw)}") from exc
    regions: tuple[RegionRule, ...] = ()
    if settings.regions is not None:
        region_path = settings.regions if settings.regions.is_absolute() else path.parent / settings.regions
        regions = load_region_rules(region_path)
    vocabulary = Vocabulary(labels=frozenset())
    if settings.deny.vocabulary is not None:
        known = settings.deny.vocabulary
        vocabulary = load_vocabulary(known if known.is_absolute() else path.parent / known)
    return PixelPolicy(settings, regions, vocabulary)


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Name the rule by its `name` where the error is inside `rules`, so the fix is easy to find."""
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(str(p) for p in loc)
        if loc[:1] == ["rules"] and len(loc) > 1 and isinstance(loc[1], int):
            rules = raw.get("rules") or []
            item = rules[loc[1]] if loc[1] < len(rules) else {}
            name = item.get("name", "unnamed") if isinstance(item, dict) else "unnamed"
            where = f"rule {loc[1]} ({name}): " + ".".join(str(p) for p in loc[2:])
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
