"""Which OCR words are PHI: this instance's own header values, matched fuzzily, and PHI patterns.

OCR misreads small and stylised text ("BAPTIST" -> "BAPT1ST"), so words and terms are compared in
a "shape" form that folds the usual confusions (0/O, 1/I/L, 5/S, 8/B, 2/Z, 6/G) and drops
punctuation, then allowed a few edits in proportion to their length (rapidfuzz Levenshtein).
Multi-word terms are matched against runs of neighbouring words. Presidio's pattern recognizers
(offline, NoOpNlpEngine) add PHI that is not in the header, such as other dates.
"""

from __future__ import annotations

import re
from collections import defaultdict

from rapidfuzz.distance import Levenshtein

from node.deid.phi import HeaderPhi
from node.deid.pixels.ocr import Word
from node.deid.pixels.policy import MatchSettings

_FOLD = str.maketrans({"0": "O", "Q": "O", "D": "O", "1": "I", "L": "I", "|": "I", "!": "I",
                       "5": "S", "8": "B", "2": "Z", "6": "G"})
_NOT_ALNUM = re.compile(r"[^0-9A-Z|!]")
_TOKEN_SPLIT = re.compile(r"[\s\^,]+")
_MIN_DIGITS = 4  # dates, phone and social security numbers all have more; other lines skip presidio


def shape(text: str) -> str:
    return _NOT_ALNUM.sub("", text.upper()).translate(_FOLD)


class PresidioPatterns:
    """Presidio's recognizers, offline: the policy's own regular expressions (e.g. any printed
    date) and chosen predefined ones (phone numbers ...). Built once per cleaner (~0.5 s)."""

    _POLICY_ENTITY = "PRINTED_PHI"

    def __init__(self, settings: MatchSettings) -> None:
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
        from presidio_analyzer.nlp_engine import NoOpNlpEngine

        engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        self._analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
        self._entities = list(settings.presidio_entities)
        if settings.patterns:
            patterns = [Pattern(p.name, p.regex, p.score) for p in settings.patterns]
            self._analyzer.registry.add_recognizer(
                PatternRecognizer(supported_entity=self._POLICY_ENTITY, patterns=patterns)
            )
            self._entities.append(self._POLICY_ENTITY)
        self._min_score = settings.presidio_min_score
        self._seen: dict[str, list[tuple[int, int]]] = {}

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of PHI in `text`; cine loops repeat their lines, so results are kept."""
        if sum(c.isdigit() for c in text) < _MIN_DIGITS:
            return []
        if text not in self._seen:
            results = self._analyzer.analyze(text, language="en", entities=self._entities)
            self._seen[text] = [(r.start, r.end) for r in results if r.score >= self._min_score]
        return self._seen[text]


def text_lines(words: list[Word]) -> list[list[Word]]:
    """Words of one reading (rendering) that sit side by side, left to right, as lines of text.

    Candidate regions split lines at wide gaps, so lines are rebuilt from geometry: a name split
    over three regions is still matched as one name. Open lines are indexed by the height of
    their last word's centre, so a frame with hundreds of words stays cheap.
    """
    readings: dict[int, list[Word]] = defaultdict(list)
    for word in words:
        readings[word.reading].append(word)
    lines: list[list[Word]] = []
    for reading in readings.values():
        by_row: dict[int, list[list[Word]]] = defaultdict(list)
        for word in sorted(reading, key=lambda w: (w.rect.x, w.rect.y)):
            centre, half = _centre_row(word), word.rect.h // (2 * _ROW) + 1
            rows = range(centre - half, centre + half + 1)
            line = next((ln for r in rows for ln in by_row[r] if _continues(ln[-1], word)), None)
            if line is None:
                line = [word]
                lines.append(line)
            else:
                by_row[_centre_row(line[-1])].remove(line)
                line.append(word)
            by_row[centre].append(line)
    return lines


_ROW = 4  # px per row bucket


def _centre_row(word: Word) -> int:
    return (word.rect.y + word.rect.h // 2) // _ROW


def _continues(left: Word, right: Word) -> bool:
    a, b = left.rect, right.rect
    overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    height = min(a.h, b.h)
    gap = b.x - (a.x + a.w)
    return overlap >= 0.5 * height and -height <= gap <= 2 * max(a.h, b.h)


class PhiMatcher:
    """Marks the words of OCR lines that are, or fuzzily look like, this instance's PHI."""

    def __init__(self, phi: HeaderPhi, settings: MatchSettings, patterns: PresidioPatterns | None) -> None:
        self._settings = settings
        self._patterns = patterns
        wholes = {shape(t) for t in phi.terms()}
        # Words of places ("BAPTIST" of "BAPTIST MED CTR") identify on their own; parts of dates do not.
        tokens = {shape(word) for place in phi.places for word in _TOKEN_SPLIT.split(place)}
        self._wholes = sorted({w for w in wholes if len(w) >= settings.min_term_length}, key=len, reverse=True)
        self._tokens = sorted({t for t in tokens if len(t) > settings.exact_up_to} - set(self._wholes), key=len)

    def _allowed(self, term: str) -> int:
        return 0 if len(term) <= self._settings.exact_up_to else int(len(term) * self._settings.edits_per_char)

    def _distance(self, candidate: str) -> int | None:
        """Edits from `candidate` to the nearest whole term, if within that term's allowance."""
        best = None
        for term in self._wholes:
            allowed = self._allowed(term)
            if abs(len(candidate) - len(term)) <= allowed:
                distance = Levenshtein.distance(candidate, term, score_cutoff=allowed)
                if distance <= allowed and (best is None or distance < best):
                    best = distance
        return best

    def _inside(self, candidate: str, term: str) -> bool:
        """The term appears, fuzzily, inside a longer word ("DOB:19700101", "DOE^JANE")."""
        if len(term) <= self._settings.exact_up_to or len(candidate) < len(term):
            return False
        allowed = self._allowed(term) if len(term) >= 2 * self._settings.exact_up_to else 0
        return any(
            Levenshtein.distance(candidate[i : i + len(term) + d], term, score_cutoff=allowed) <= allowed
            for d in (-1, 0, 1) if len(term) + d > 0
            for i in range(0, len(candidate) - len(term) - d + 1)
        )

    def phi_phrases(self, words: list[Word]) -> list[list[Word]]:
        """The PHI among the OCR words of one frame, judged line by line, as runs of neighbouring
        words ("1970-01" "01"): each run is masked as one, gaps and hyphens included."""
        phrases: list[list[Word]] = []
        for line in text_lines(words):
            previous = -2
            for index in sorted(self._line_hits(line)):
                if index == previous + 1:
                    phrases[-1].append(line[index])
                else:
                    phrases.append([line[index]])
                previous = index
        return phrases

    def _line_hits(self, line: list[Word]) -> set[int]:
        shapes = [shape(w.text) for w in line]
        hits: set[int] = set()
        for start in range(len(line)):
            runs = []  # (edits, words) of each run from `start` that matches a term
            for stop in range(start + 1, min(len(line), start + 4) + 1):
                distance = self._distance("".join(shapes[start:stop]))
                if distance is not None:
                    runs.append((distance, stop - start))
            if runs:  # the closest run, so a neighbouring word is not swept in by the allowance
                hits.update(range(start, start + min(runs)[1]))
        for index, word_shape in enumerate(shapes):
            if index not in hits and any(
                self._inside(word_shape, term) for term in (*self._wholes, *self._tokens)
            ):
                hits.add(index)
        if self._patterns is not None:
            hits |= self._pattern_hits(line)
        return hits

    def _pattern_hits(self, line: list[Word]) -> set[int]:
        text, starts = "", []
        for word in line:
            starts.append(len(text))
            text += word.text + " "
        spans = self._patterns.spans(text) if self._patterns else []
        return {
            i for i, begin in enumerate(starts)
            for s, e in spans if begin < e and begin + len(line[i].text) > s
        }
