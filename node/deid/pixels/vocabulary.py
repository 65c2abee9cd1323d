"""Deny by default: which burned-in text may stay, read from config/pixel-vocabulary.yaml.

A line of text in the pixels is masked whole unless every token on it is known to be safe:
orientation and view markers, units, technique and measurement values, scale numbers, and the
annotation words of the instance's modality. Whatever is not known (a name, an ID, an institution,
an unknown abbreviation, a misread) goes: an omission from the vocabulary costs an annotation,
never PHI. A label (Name, DOB, ID, Institution ...) marks its whole line as PHI, label and value.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.config import ConfigError, read_yaml_mapping
from node.deid.pixels.outcome import PixelPolicyError

_OUTER = re.compile(r"^[\s\"'`.,;:()\[\]{}|_~-]+|[\s\"'`.,;:()\[\]{}|_~-]+$")
# OCR confusions between digits and letters ("A0" for "AO"): a word is also looked up folded.
_AS_LETTERS = str.maketrans({"0": "O", "1": "I", "5": "S", "8": "B", "@": "0"})
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")  # a calendar date in any numeric order


class Vocabulary(BaseModel):
    """The safe text of burned-in annotations, per modality; see the file's header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_number_digits: int = Field(default=4, ge=1, le=8)
    joiners: str = "=<>:x*/"
    labels: frozenset[str]
    markers: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    words: dict[str, frozenset[str]] = {}

    @cached_property
    def _number(self) -> re.Pattern[str]:
        units = "|".join(re.escape(u) for u in sorted(self.units, key=len, reverse=True))
        return re.compile(rf"[+-]?\d{{1,{self.max_number_digits}}}(?:[.,]\d+)?(?:%|{units})?")

    @cached_property
    def _joined(self) -> re.Pattern[str]:
        return re.compile("[" + re.escape(self.joiners.upper()) + "]")

    @cached_property
    def _label_prefix(self) -> re.Pattern[str]:
        labels = "|".join(re.escape(label) for label in sorted(self.labels, key=len, reverse=True))
        return re.compile(rf"^(?:{labels})[:#=]")

    def labelled(self, text: str) -> bool:
        """Does the line hold a PHI label ("Name:", "DOB", "Patient ID") anywhere?"""
        for raw in text.upper().split():
            token = _OUTER.sub("", raw)
            if token in self.labels or self._label_prefix.match(raw.lstrip("\"'(")):
                return True
        return False

    def safe_line(self, text: str, modality: str) -> bool:
        """May this line stay? Every token safe, no label, no date; an empty reading is not safe
        (text was seen and not read: uncertain)."""
        tokens = [_OUTER.sub("", raw) for raw in text.upper().split()]
        tokens = [t for t in tokens if any(ch.isalnum() for ch in t)]  # a caliper's "+" says nothing
        if not tokens or self.labelled(text) or _DATE.search(text):
            return False
        words = self.words.get("COMMON", frozenset()) | self.words.get(modality.upper(), frozenset())
        return all(self._safe_token(t, words) for t in tokens)

    def _safe_token(self, token: str, words: frozenset[str]) -> bool:
        if self._safe_piece(token, words):
            return True
        pieces = [p for p in self._joined.split(token) if p]
        return len(pieces) > 1 and all(self._safe_piece(p, words) for p in pieces)

    def _safe_piece(self, piece: str, words: frozenset[str]) -> bool:
        if self._number.fullmatch(piece.replace("@", "0")):
            return True
        known = words | self.markers | self.units
        return piece in known or piece.translate(_AS_LETTERS) in known


def load_vocabulary(path: Path) -> Vocabulary:
    """Read and validate the vocabulary; a bad field stops loading with file and field named."""
    try:
        return Vocabulary.model_validate(_upper(read_yaml_mapping(path)))
    except ConfigError as exc:
        raise PixelPolicyError(str(exc)) from exc
    except ValidationError as exc:
        where = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors())
        raise PixelPolicyError(f"{path}: {where}") from exc


def _upper(raw: dict) -> dict:
    """Words compared upper-case, whatever case the file uses."""
    out = dict(raw)
    for key in ("labels", "markers", "units"):
        if isinstance(out.get(key), list):
            out[key] = [str(v).upper() for v in out[key]]
    if isinstance(out.get("words"), dict):
        out["words"] = {str(k).upper(): [str(v).upper() for v in (vs or [])] for k, vs in out["words"].items()}
    return out
