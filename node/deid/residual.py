"""The last look before forwarding: does any text left in the de-identified header still look like PHI?

Cleaning removes what it recognises; this looks again at everything that remains (every text value
at every depth, private text the safe list kept, person names) with the instance's own header PHI
collected before cleaning, the policy's exact patterns (contact details, labelled IDs, titled and
context-named people) and the named-entity model's people. A hit means something slipped through
(an attribute a rule keeps, a form the cleaner missed): the instance fails closed and is
quarantined, with a reason that names the tag and the kind of thing found, never the value.
Organisations and places from the model are not counted, nor are the attributes the policy says
hold vocabularies rather than free text (config/free-text.yaml `last_look.skip`): kept device
names and code meanings read as them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from node.deid.entities import Span
from node.deid.metadata import vr_of
from node.deid.phi import DATE_KEYWORDS, ID_KEYWORDS, NAME_KEYWORDS, PLACE_KEYWORDS, HeaderPhi
from node.deid.text import TextPolicy, header_term_matcher
from node.deid.vocabulary import words_of

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
_PERSON_NAME = "PN"
# The attributes the header PHI is collected from: their own rules decide them (a profile may keep
# the station or the institution), so their values are not matched against themselves.
_SOURCES = frozenset(
    tag_for_keyword(k) for k in (*NAME_KEYWORDS, *ID_KEYWORDS, *DATE_KEYWORDS, *PLACE_KEYWORDS, "PatientName", "PatientID")
)


class ResidualPhi(Exception):
    """Text that still looks like PHI after de-identification; the message holds no value."""


@dataclass(frozen=True)
class Finding:
    """Where PHI was seen and what kind: a tag path ("(0040,A730)[0](0040,A160)") and a kind name."""

    path: str
    kind: str

    def reason(self) -> str:
        return f"PHI left after de-identification: {self.kind} in {self.path}"


def _strings(value: object) -> list[str]:
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value if v not in (None, "")]
    if isinstance(value, bytes):
        return [value.decode("latin-1").rstrip("\x00 ")]
    return [] if value in (None, "") else [str(value)]


class LastLook:
    """The last look for one profile's text policy; build once per process, `check` per instance."""

    def __init__(self, policy: TextPolicy) -> None:
        self._policy = policy
        settings = policy.last_look
        self._patterns = tuple((name, p) for name, p in policy.patterns if name in settings.patterns)
        self._kinds = frozenset(settings.entities)
        self._finder = policy.finder if self._kinds else None
        self._min_term = settings.min_header_term
        self._min_words = settings.min_entity_words
        self._skip = frozenset(tag_for_keyword(k) for k in settings.skip)
        self._looks_like_phi = lru_cache(maxsize=8192)(self._kind_of)  # texts repeat across a series

    def findings(self, ds: Dataset, phi: HeaderPhi) -> Iterator[Finding]:
        """Every text value that still looks like PHI, as (path, kind); values never leave here."""
        terms = header_term_matcher(phi, self._policy.vocabulary, self._min_term)
        for path, vr, text in _texts(ds, "", self._skip):
            if terms is not None and terms.search(text):
                yield Finding(path, "header value")
                continue
            if vr == _PERSON_NAME:
                continue  # names the profile left are pseudonyms or dummies; only the header's count
            kind = self._looks_like_phi(text)
            if kind is not None:
                yield Finding(path, kind)

    def check(self, ds: Dataset, phi: HeaderPhi) -> None:
        """Raise ResidualPhi naming the first finding; return quietly when nothing is left."""
        for finding in self.findings(ds, phi):
            raise ResidualPhi(finding.reason())

    def _kind_of(self, text: str) -> str | None:
        """The kind of the first pattern or model span in `text` that the vocabulary does not vet."""
        spans = [Span(m.start(), m.end(), name) for name, pattern in self._patterns for m in pattern.finditer(text)]
        if self._finder is not None and self._policy.vocabulary.may_name(text):
            spans.extend(
                s for s in self._finder.find(text)
                if s.kind in self._kinds and len(words_of(text[s.start : s.end])) >= self._min_words
            )
        for span in spans:
            if self._policy.vetted(text, span) is not None:
                return span.kind
        return None


def _texts(ds: Dataset, prefix: str, skip: frozenset[int], encoding: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(path, VR, text) of every text and person-name value at every depth. Values still raw are
    decoded here, not converted by pydicom: a CT slice carries a hundred kept private texts, and
    converting them all costs more than the whole look."""
    if encoding is None:
        encoding = _python_encoding(ds)
    for tag in list(ds.keys()):
        if tag in skip or (tag in _SOURCES and not prefix):
            continue
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None) or vr_of(tag)
        if vr == "UN" and isinstance(raw, RawDataElement):
            vr = ds[tag].VR  # an implicit-VR private element: pydicom's private dictionary may know it
        path = f"{prefix}{Tag(tag)}".replace(" ", "")
        if vr == "SQ":
            for number, item in enumerate(ds[tag].value):
                yield from _texts(item, f"{path}[{number}]", skip, encoding)
        elif vr in _TEXT_VRS or vr == _PERSON_NAME:
            value = raw.value if isinstance(raw, RawDataElement) else None
            if isinstance(value, bytes) and encoding != _CONVERT:
                texts = [t for t in value.decode(encoding, errors="replace").rstrip("\x00 ").split("\\") if t.strip()]
            else:
                texts = _strings(ds[tag].value)
            for text in texts:
                yield path, vr, text


_CONVERT = "convert"
# Single-byte or UTF-8 character sets whose bytes decode on their own; any other (ISO 2022 code
# extensions) is left to pydicom.
_SIMPLE_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _python_encoding(ds: Dataset) -> str:
    declared = ds.get("SpecificCharacterSet", "") or ""
    values = [str(v).strip() for v in (declared if isinstance(declared, (list, MultiValue)) else [declared])]
    return _SIMPLE_CHARSETS.get(values[0], _CONVERT) if len(values) == 1 else _CONVERT
