"""Free-text cleaning: remove identifiers from descriptions and comments, keep the clinical words.

Three sources of identifiers, each giving spans of the text:
- the instance's own header values (names in any order and case, IDs, dates in the printed forms
  phi.py derives, the institution, its initials and the station) matched as whole words;
- the policy's patterns (dates, phone numbers, e-mail, "Dr. <Name>", "phoned to <Name>" ...) from
  config/free-text.yaml;
- a named-entity model (node/deid/entities.py): people, organisations, places, contact details.
Name and place patterns and the model mistake clinical text for identifiers, so their spans (the
kinds `vocabulary_applies_to` names; dates, numbers and contact details are exact) pass through the
clinical vocabulary (config/clinical-vocabulary.yaml): a span made only of clinical words is kept,
and clinical words at either end of a span stay ("MR BRAIN W WO CONTRAST" keeps every word;
"CT HEAD Dr Jane Roe FOLLOW UP" keeps "CT HEAD FOLLOW UP": the model's people often run into the
capitals next to them). After an honorific or a cue, a word in title case counts as a name even
where it is listed ("Dr Dixon" goes, "MR DIXON" stays). The cost: a person the model alone finds,
written in capitals, whose surname is a listed clinical word keeps it, unless it is in the
header. Header values go wherever they are, clinical or not. Only the spans are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import regex
from pydicom.datadict import tag_for_keyword
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.config import ConfigError
from node.deid.entities import EntityFinder, EntitySettings, Span, entity_finder
from node.deid.phi import HeaderPhi
from node.deid.vocabulary import ClinicalVocabulary, load_vocabulary, read_policy, words_of

_SPACES = regex.compile(r"\s{2,}")
_EMPTY_BRACKETS = regex.compile(r"\(\s*\)|\[\s*\]|\{\s*\}|<\s*>")
# Separators left alone at either end once what they separated is gone ("CT HEAD - ", " / GP");
# punctuation that is part of a word stays ("C-", "W/").
_DANGLING = regex.compile(r"^(?:[,;:\-^/]+\s*)+|(?:(?:(?<=\s)|^)[\-^/]+|[,;:]+)(?:\s*(?:[,;:]+|(?<=\s)[\-^/]+))*\s*$")
_WORD = regex.compile(r"[^\s^_]+")
HEADER_KIND = "HEADER"
# Header values are removed whole, wherever they are: a patient may be called Head or Hand.
_WHOLE_KINDS = frozenset({HEADER_KIND})


class LastLookSettings(BaseModel):
    """What the last look before forwarding counts as PHI still present (config `last_look`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patterns: tuple[str, ...] = ()
    entities: tuple[str, ...] = ("PERSON",)
    min_entity_words: int = Field(default=2, ge=1)
    min_header_term: int = Field(default=4, ge=1)
    skip: tuple[str, ...] = ()

    @field_validator("skip")
    @classmethod
    def _keywords(cls, skip: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in skip if tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"not DICOM keywords: {unknown}")
        return skip


class _FreeTextFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replacement: str = ""
    clinical_vocabulary: str | None = None
    vocabulary_applies_to: tuple[str, ...] = ()
    title_case_names: tuple[str, ...] = ()
    named_entities: EntitySettings | None = None
    patterns: dict[str, str] = Field(default_factory=dict)
    last_look: LastLookSettings = LastLookSettings()

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, expression in patterns.items():
            try:
                regex.compile(expression)
            except regex.error as exc:
                raise ValueError(f"pattern {name!r}: {exc}") from exc
        return patterns

    @model_validator(mode="after")
    def _last_look_names_known_patterns(self) -> _FreeTextFile:
        unknown = set(self.last_look.patterns) - set(self.patterns)
        if unknown:
            raise ValueError(f"last_look.patterns: unknown pattern names {sorted(unknown)}")
        known = set(self.patterns) | set(self.named_entities.kinds if self.named_entities else ())
        for name in ("vocabulary_applies_to", "title_case_names"):
            unknown = set(getattr(self, name)) - known
            if unknown:
                raise ValueError(f"{name}: neither a pattern nor an entity kind {sorted(unknown)}")
        if self.named_entities is not None:
            missing = set(self.last_look.entities) - set(self.named_entities.kinds)
            if missing:
                raise ValueError(f"last_look.entities: not among named_entities.kinds {sorted(missing)}")
        return self


@dataclass(frozen=True)
class TextPolicy:
    """Named patterns, the clinical allowlist and the entity model used wherever free text is cleaned."""

    patterns: tuple[tuple[str, regex.Pattern[str]], ...] = ()
    replacement: str = ""
    vocabulary: ClinicalVocabulary = field(default_factory=ClinicalVocabulary.empty)
    vocabulary_applies_to: frozenset[str] = frozenset()
    title_case_names: frozenset[str] = frozenset()
    entities: EntitySettings | None = None
    last_look: LastLookSettings = LastLookSettings()

    @classmethod
    def load(cls, path: Path) -> TextPolicy:
        """Read config/free-text.yaml (and the vocabulary it names, relative to it); ConfigError if wrong."""
        raw = read_policy(path, _FreeTextFile)
        vocabulary = ClinicalVocabulary.empty()
        if raw.clinical_vocabulary is not None:
            vocabulary_path = (path.parent / raw.clinical_vocabulary).resolve()
            if not vocabulary_path.is_file():
                raise ConfigError(f"{path}: clinical_vocabulary: file not found: {vocabulary_path}")
            vocabulary = load_vocabulary(vocabulary_path)
        compiled = tuple((name, regex.compile(expression)) for name, expression in raw.patterns.items())
        return cls(
            compiled, raw.replacement, vocabulary, frozenset(raw.vocabulary_applies_to),
            frozenset(raw.title_case_names), raw.named_entities, raw.last_look,
        )

    def __post_init__(self) -> None:
        # Descriptions repeat across a series: their pattern spans are worked out once.
        object.__setattr__(self, "pattern_spans", lru_cache(maxsize=8192)(self._pattern_spans))

    def _pattern_spans(self, text: str) -> tuple[Span, ...]:
        """The patterns' spans in `text`, vetted by the vocabulary (independent of any header)."""
        found = (Span(m.start(), m.end(), name) for name, pattern in self.patterns for m in pattern.finditer(text))
        return tuple(s for s in (self.vetted(text, c) for c in found) if s is not None)

    def vetted(self, text: str, span: Span) -> Span | None:
        """The span as the clinical vocabulary leaves it, for the kinds it applies to (see keep_clinical_words)."""
        if span.kind not in self.vocabulary_applies_to:
            return span
        return keep_clinical_words(text, span, self.vocabulary, title_case_is_name=span.kind in self.title_case_names)

    @property
    def finder(self) -> EntityFinder | None:
        return entity_finder(self.entities) if self.entities is not None else None


@lru_cache(maxsize=256)
def header_term_matcher(phi: HeaderPhi, vocabulary: ClinicalVocabulary, min_length: int = 1) -> regex.Pattern[str] | None:
    """One whole-word, any-case matcher for the header's PHI terms (places that are only clinical
    words, such as a department called RADIOLOGY or MRI, are not identifying and left out).
    Cached: every instance of a series gives the same header PHI."""
    places = phi.places | phi.site_codes
    terms = [
        regex.escape(t)
        for t in phi.terms()
        if len(t.strip()) >= min_length and not (t in places and vocabulary.is_clinical(t))
    ]
    if not terms:
        return None
    return regex.compile(r"(?<![\p{L}\p{N}])(?:" + "|".join(terms) + r")(?![\p{L}\p{N}])", regex.IGNORECASE)


class TextCleaner:
    """Cleans the free text of one instance against that instance's own header PHI."""

    def __init__(self, policy: TextPolicy, phi: HeaderPhi) -> None:
        self._policy = policy
        self._terms = header_term_matcher(phi, policy.vocabulary)
        self._finder = policy.finder

    def spans(self, text: str) -> list[Span]:
        """Every identifier span in `text`, clinical words already let go, overlapping allowed."""
        found = [Span(m.start(), m.end(), HEADER_KIND) for m in self._terms.finditer(text)] if self._terms else []
        patterns = self._policy.pattern_spans(text)
        if self._finder is not None and self._policy.vocabulary.may_name(text):
            # Where the model's span covers a header value, the header span already removes the
            # value and the model's extent is the less reliable one ("<NAME> POST OP CHECK").
            model = (s for s in self._finder.find(text) if not any(_overlap(s, h) for h in found))
            found.extend(s for s in (self._policy.vetted(text, c) for c in model) if s is not None)
        found.extend(patterns)
        return found

    def clean(self, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        return remove_spans(text, spans, self._policy.replacement)


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def _words(text: str, span: Span) -> Iterator[tuple[int, int, str]]:
    for match in _WORD.finditer(text, span.start, span.end):
        yield match.start(), match.end(), match.group()


def keep_clinical_words(
    text: str, span: Span, vocabulary: ClinicalVocabulary, *, title_case_is_name: bool = False
) -> Span | None:
    """The span without the clinical words at its ends; None when nothing but clinical words is left.

    A connector next to what is removed goes with it ("at <a hospital>"). Header values are
    removed whole (see the module docstring). With `title_case_is_name`, a word in title case is
    never clinical ("Dr Dixon" is a person, "MR DIXON" a sequence)."""
    words = [w for w in _words(text, span) if words_of(w[2])]
    if not words:
        return span if span.end > span.start else None
    if span.kind in _WHOLE_KINDS:
        return span

    def clinical(word: str) -> bool:
        return vocabulary.is_clinical_word(word) and not (title_case_is_name and _title_case(word))

    kept = [clinical(w[2]) or vocabulary.is_connector(w[2]) for w in words]
    if all(kept):
        return None if any(clinical(w[2]) for w in words) else span
    first = kept.index(False)
    last = len(kept) - 1 - kept[::-1].index(False)
    while first > 0 and vocabulary.is_connector(words[first - 1][2]):
        first -= 1
    while last < len(words) - 1 and vocabulary.is_connector(words[last + 1][2]):
        last += 1
    return Span(max(span.start, words[first][0]), min(span.end, words[last][1]), span.kind)


def _title_case(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return len(letters) > 1 and letters[0].isupper() and any(c.islower() for c in letters[1:])


def remove_spans(text: str, spans: Iterable[Span], replacement: str) -> str:
    """The text with every span (merged where they overlap) replaced, then tidied."""
    pieces, cursor = [], 0
    for start, end in _merged(spans):
        pieces.append(text[cursor:start])
        pieces.append(replacement)
        cursor = end
    pieces.append(text[cursor:])
    cleaned = _SPACES.sub(" ", _EMPTY_BRACKETS.sub("", "".join(pieces))).strip()
    return _DANGLING.sub("", cleaned).strip()


def _merged(spans: Iterable[Span]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if merged and span.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span.end)
        else:
            merged.append([span.start, span.end])
    return [(a, b) for a, b in merged]
