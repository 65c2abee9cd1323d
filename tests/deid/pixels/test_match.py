"""OCR words against the instance's own PHI: misreads still match, ordinary text does not."""

from __future__ import annotations

import pydicom
import pytest

from node.deid.phi import collect_header_phi
from node.deid.pixels.detect import Rect
from node.deid.pixels.match import PhiMatcher, PresidioPatterns
from node.deid.pixels.ocr import STROKES, Word
from node.deid.pixels.policy import load_policy
from tests.deid.pixels.conftest import POLICY


@pytest.fixture(scope="module")
def matcher() -> PhiMatcher:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID = "TESTPATIENT^ALPHA", "TP4821973"
    ds.PatientBirthDate, ds.InstitutionName = "19700101", "BAPTIST MED CTR"
    settings = load_policy(POLICY).settings.matching
    return PhiMatcher(collect_header_phi(ds), settings, PresidioPatterns(settings))


def _line(*texts: str) -> list[Word]:
    words, x = [], 0
    for text in texts:
        words.append(Word(text, Rect(x, 10, 8 * len(text), 12), crop=0, reading=STROKES))
        x += 8 * len(text) + 6
    return words


@pytest.mark.parametrize(
    "line",
    [
        ("BAPT1ST",),  # 1 read for I
        ("BAPTI", "ST", "MED", "CTR"),  # one word split in two
        ("TESTPAT1ENT^ALPHA",),
        ("ALPHA,", "TESTPATIENT"),
        ("ID:", "TP482I973"),
        ("DOB", "1970-01-01"),
        ("01/01/1970",),
        ("DOB:19700101",),
        ("Exam", "3/14/2019"),  # any printed date, not only the header's (policy pattern)
        ("Tel", "555-123-4567"),
    ],
)
def test_phi_is_found_despite_ocr_misreads(matcher: PhiMatcher, line: tuple[str, ...]) -> None:
    assert matcher.phi_phrases(_line(*line))


@pytest.mark.parametrize(
    "line",
    [("LYMPH", "NODE"), ("+2:09:04",), ("TIS<0.4", "MI=0.8", "AO=100%"), ("CINE", "0118"), ("ALP",), ("MEDIAL",)],
)
def test_ordinary_text_is_not_phi(matcher: PhiMatcher, line: tuple[str, ...]) -> None:
    assert matcher.phi_phrases(_line(*line)) == []


def test_all_words_of_a_multiword_name_are_marked(matcher: PhiMatcher) -> None:
    phrases = matcher.phi_phrases(_line("Site:", "BAPTIST", "MED", "CTR", "3cm"))
    assert [[w.text for w in phrase] for phrase in phrases] == [["BAPTIST", "MED", "CTR"]]
