"""The clinical words free-text cleaning keeps: an allowlist read from config/clinical-vocabulary.yaml.

Patterns and the named-entity model both mistake clinical text for identifiers ("MR BRAIN" for
"Mr. Brain", "BRAIN W WO CONTRAST" for an organisation). A span made only of these words is
therefore never removed. The list is data so that a site can add its own protocol words.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from node.config import ConfigError, read_yaml_mapping

_WORD_SEPARATORS = re.compile(r"[\s^_]+")
_EDGE_PUNCTUATION = "()[]{}<>\"'.,;:!?*#=|"
_PART_SEPARATORS = re.compile(r"[/\-+&]+")
# A small number, maybe with a unit (5, 2.5mm, 3T, 512x512): a slice, a series, a field strength.
# Longer runs of digits are not clinical words: they are how IDs and dates look.
_NUMBER = re.compile(r"\d{1,3}(?:[.,]\d+)?(?:mm|cm|ms|s|t|kv|ma|mas|%|x\d{1,4})?", re.IGNORECASE)

Model = TypeVar("Model", bound=BaseModel)


def read_policy(path: Path, model: type[Model]) -> Model:
    """A policy file read through the one YAML loader and validated by its pydantic model;
    ConfigError names the file and the field."""
    raw = read_yaml_mapping(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc


class _VocabularyFile(BaseModel):
    """Categories of words (any names), each a list of words."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def categories(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, words in (self.model_extra or {}).items():
            if not isinstance(words, list) or not words or not all(isinstance(w, (str, int, float)) for w in words):
                raise ValueError(f"{name}: must be a non-empty list of words")
            found[name] = [str(w) for w in words]
        if not found:
            raise ValueError("no word lists")
        return found


def words_of(text: str) -> list[str]:
    """The words of a free-text value as the vocabulary sees them (separators and edge punctuation gone)."""
    words = (w.strip(_EDGE_PUNCTUATION) for w in _WORD_SEPARATORS.split(text))
    return [w for w in words if w]


CONNECTORS = "connectors"


class ClinicalVocabulary:
    """Answers "is this span only clinical words?" for the text cleaner and the last look."""

    def __init__(self, words: frozenset[str], connectors: frozenset[str] = frozenset()) -> None:
        self._connectors = frozenset(w.upper() for w in connectors)
        self._words = frozenset(w.upper() for w in words) - self._connectors
        self.may_name = lru_cache(maxsize=8192)(self._may_name)

    @classmethod
    def load(cls, path: Path) -> ClinicalVocabulary:
        model = read_policy(path, _VocabularyFile)
        try:
            categories = model.categories()
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        connectors = frozenset(categories.pop(CONNECTORS, ()))
        return cls(frozenset(w for words in categories.values() for w in words), connectors)

    @classmethod
    def empty(cls) -> ClinicalVocabulary:
        return cls(frozenset())

    def __len__(self) -> int:
        return len(self._words)

    def is_clinical_word(self, word: str) -> bool:
        upper = word.upper()
        if upper in self._words or _NUMBER.fullmatch(word):
            return True
        parts = [p for p in _PART_SEPARATORS.split(upper) if p]
        return len(parts) > 1 and all(p in self._words for p in parts)

    def is_connector(self, word: str) -> bool:
        return word.upper() in self._connectors

    def _may_name(self, text: str) -> bool:
        """Whether any word of `text` could be part of a name or place: two letters or more and
        neither clinical nor a connector. Where none is, the model cannot find anything the
        vocabulary would not let go, so callers skip it (most descriptions and comments)."""
        return any(
            sum(c.isalpha() for c in w) >= 2 and not self.is_clinical_word(w) and not self.is_connector(w)
            for w in words_of(text)
        )

    def is_clinical(self, span: str) -> bool:
        """True when every word of the span is clinical or a connector, and one at least is clinical."""
        words = words_of(span)
        clinical = [w for w in words if not self.is_connector(w)]
        return bool(clinical) and all(self.is_clinical_word(w) for w in clinical)


@lru_cache(maxsize=8)
def load_vocabulary(path: Path) -> ClinicalVocabulary:
    """One vocabulary per file per process (profiles that share it share it)."""
    return ClinicalVocabulary.load(path)
