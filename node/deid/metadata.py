"""Apply a compiled profile to one dataset: walk every element at every depth and act on it.

The walk asks the profile for the element's rule (a dictionary lookup, cached per tag for the
attributes the table does not name), resolves combined codes against the instance's IOD, and
dispatches on the single code. It never converts an element it keeps unless it must look inside
(sequences, UIDs, ages), which is most of its speed. Private attributes go to the safe list.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping

import pydicom
import structlog
from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, get_entry, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence_item
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import STR_VR

from node.deid import private as private_rules
from node.deid.actions import dummy_value, resolve_combined
from node.deid.dates import cap_age, shift_date, shift_datetime
from node.deid.part10 import declared_syntax
from node.deid.phi import HeaderPhi
from node.deid.profile import Profile, Rule
from node.deid.pseudonyms import Mappings, PatientPseudonym
from node.deid.text import TextCleaner
from node.deid.uids import replace_uid

log = structlog.get_logger(__name__)

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
_UID_LIKE_VRS = frozenset({"UI", "LO", "SH"})
_GROUP_LENGTH = Rule("X")
_STUDY_DATE = 0x00080020
_PATIENT_IDENTITY_REMOVED = 0x00120062
_METHOD = 0x00120063
_METHOD_CODES = 0x00120064
_TEMPORAL_MODIFIED = 0x00280303
# A profile's X must not break the IOD: where the attribute is Type 1 or 2, it becomes D or Z.
_REMOVE_UNLESS_REQUIRED = "X/Z/D"
# Printable ASCII but the value separator, maybe padded with a NUL: the same text in every charset.
_PLAIN_CREATOR = re.compile(rb"[ -\[\]-~]*\x00?")


@dataclass(frozen=True)
class MetadataReport:
    """What the step did to one instance, for the job record and the logs (no PHI in it)."""

    patient: PatientPseudonym
    options: tuple[str, ...]
    actions: Mapping[str, int]


def _values(value: object) -> list[str]:
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [] if value in (None, "") else [str(value)]


@lru_cache(maxsize=8192)
def vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


_LOOK_INSIDE_ON_KEEP = frozenset({"SQ", "AS", "UN"})


def _converted_vr(raw: DataElement | RawDataElement, creator: str) -> str:
    """The VR pydicom gives a private element when it converts it, found without converting it.

    As pydicom.hooks.raw_element_vr does: an element read with its VR keeps it; one read without
    (implicit VR) or read as UN takes it from pydicom's private dictionary for its creator, else UN
    (pydicom's public dictionary, which it asks first, has no private tags).
    """
    vr = raw.VR
    if isinstance(raw, DataElement) or (vr is not None and (vr != "UN" or not config.replace_un_with_known_vr)):
        return vr
    try:
        return private_dictionary_VR(raw.tag, creator)
    except KeyError:
        return "UN"


def _with_declared_vr(tag: int, vr: str, value: bytes) -> DataElement:
    """An UN private element's bytes as the text the safe list says they are (implicit VR files
    only say UN), so that its value can be read and rewritten."""
    text = value.decode("latin-1").rstrip("\x00 ")
    return DataElement(tag, vr, text.split("\\") if "\\" in text else text)


class _Pass:
    """One instance's trip through the profile: its patient, its counts, its text cleaner."""

    def __init__(
        self,
        deidentifier: MetadataDeidentifier,
        mappings: Mappings,
        patient: PatientPseudonym,
        phi: HeaderPhi,
        sop_class_uid: str,
    ) -> None:
        self.profile = deidentifier.profile
        self._rule_of = deidentifier.rule_of
        self.mappings = mappings
        self.patient = patient
        self.phi = phi
        self.sop_class_uid = sop_class_uid
        self.counts: Counter[str] = Counter()
        self.dates_shifted = 0
        self._cleaner: TextCleaner | None = None
        self._handlers: dict[str, Callable[[Dataset, int, Rule], None]] = {
            "X": self._remove,
            "Z": self._empty,
            "D": self._dummy,
            "K": self._keep,
            "C": self._clean,
            "U": self._uid,
        }

    # -- the walk ---------------------------------------------------------------------------
    def walk(self, ds: Dataset) -> None:
        private_tags = []
        for tag in list(ds.keys()):
            if tag >> 16 & 1:
                private_tags.append(tag)
                continue
            rule = self._rule_of(tag)
            code = rule.code
            if "/" in code:
                code = resolve_combined(code, self.profile.attribute_types.type_of(tag, self.sop_class_uid))
            elif code == "X" and tag in self.profile.attribute_types.by_tag:
                code = resolve_combined(_REMOVE_UNLESS_REQUIRED, self.profile.attribute_types.type_of(tag, self.sop_class_uid))
            self.counts[code] += 1
            self._handlers[code](ds, tag, rule)
        self._private(ds, private_tags)

    def _items(self, element: DataElement) -> None:
        for item in element.value:
            self.walk(item)

    # -- single codes -----------------------------------------------------------------------
    def _remove(self, ds: Dataset, tag: int, rule: Rule) -> None:
        del ds[tag]

    def _empty(self, ds: Dataset, tag: int, rule: Rule) -> None:
        element = ds[tag]
        if element.VR == "SQ":
            element.value = Sequence()
        else:
            element.value = "" if element.VR in STR_VR else None

    def _keep(self, ds: Dataset, tag: int, rule: Rule) -> None:
        if vr_of(tag) not in _LOOK_INSIDE_ON_KEEP:
            return  # the dictionary says it is neither a sequence nor an age: nothing to look at
        vr = self._raw_vr(ds, tag)
        if vr == "SQ":
            self._items(ds[tag])
        elif vr == "AS" and self.profile.max_age_years is not None:
            self._map_strings(ds[tag], lambda v: cap_age(v, self.profile.max_age_years or 0))

    def _dummy(self, ds: Dataset, tag: int, rule: Rule) -> None:
        element = ds[tag]
        vr = element.VR
        if rule.value is not None:
            element.value = rule.value.format(
                patient_id=self.patient.patient_id, patient_name=self.patient.patient_name
            )
        elif vr == "SQ":
            self._items(element)
        elif vr == "UI":
            self._map_strings(element, self._new_uid)
        elif vr in ("DA", "DT") and _values(element.value):
            self._shift(element, fallback=str(dummy_value(vr)))
        else:
            element.value = dummy_value(vr)

    def _clean(self, ds: Dataset, tag: int, rule: Rule) -> None:
        element = ds[tag]
        vr = element.VR
        if vr == "SQ":
            self._items(element)
        elif vr in ("DA", "DT"):
            self._shift(element, fallback="")
        elif vr == "UI":
            self._map_strings(element, self._new_uid)
        elif vr == "AS" and self.profile.max_age_years is not None:
            self._map_strings(element, lambda v: cap_age(v, self.profile.max_age_years or 0))
        elif vr in _TEXT_VRS:
            self._map_strings(element, self.cleaner.clean)
        elif vr == "PN":
            element.value = dummy_value(vr)

    def _uid(self, ds: Dataset, tag: int, rule: Rule) -> None:
        element = ds[tag]
        if element.VR == "SQ":
            self._items(element)
        elif element.VR == "UI":
            self._map_strings(element, self._new_uid)
        else:
            self._dummy(ds, tag, rule)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def cleaner(self) -> TextCleaner:
        if self._cleaner is None:
            self._cleaner = TextCleaner(self.profile.text, self.phi)
        return self._cleaner

    def _new_uid(self, value: str) -> str:
        return replace_uid(value, self.mappings)

    def _raw_vr(self, ds: Dataset, tag: int) -> str:
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        return vr if vr and vr != "UN" else vr_of(tag)

    @staticmethod
    def _map_strings(element: DataElement, change: Callable[[str], str]) -> None:
        values = _values(element.value)
        if not values:
            return
        new = [change(v) for v in values]
        if new != values:
            element.value = new if len(new) > 1 else new[0]

    def _shift(self, element: DataElement, *, fallback: str) -> None:
        shift = shift_date if element.VR == "DA" else shift_datetime
        days = self.patient.date_offset_days
        values = _values(element.value)
        if not values:
            return
        moved = [shift(v, days) for v in values]
        self.dates_shifted += sum(m is not None for m in moved)
        new = [m if m is not None else fallback for m in moved]
        element.value = new if len(new) > 1 else new[0]

    # -- private attributes -----------------------------------------------------------------
    def _private(self, ds: Dataset, private_tags: list[int]) -> None:
        if not private_tags:
            return
        if self.profile.private.code != "C":
            for tag in private_tags:
                del ds[tag]
            self.counts["X"] += len(private_tags)
            return
        self._safe_private(ds, private_tags)

    def _safe_private(self, ds: Dataset, private_tags: list[int]) -> None:
        kept_blocks: set[int] = set()
        blocks: dict[int, tuple[str, Mapping[int, private_rules.PrivateRule]]] = {}
        for tag in private_tags:
            element_number = tag & 0xFFFF
            if element_number <= 0xFF:
                continue
            creator_tag = (tag & 0xFFFF0000) | (element_number >> 8)
            if creator_tag not in blocks:
                blocks[creator_tag] = self._block(ds, creator_tag)
            creator, rules = blocks[creator_tag]
            rule = rules.get(element_number & 0xFF)
            if rule is None:
                self._delete_private(ds, tag)
            elif self._private_element(ds, tag, creator, rule):
                kept_blocks.add(creator_tag)
        for tag in private_tags:
            if tag & 0xFFFF <= 0xFF and tag not in kept_blocks:
                del ds[tag]

    def _block(self, ds: Dataset, creator_tag: int) -> tuple[str, Mapping[int, private_rules.PrivateRule]]:
        """A block's creator and the safe list's rules for it, by element byte (none without one)."""
        creator = _creator(ds, creator_tag)
        if creator is None:
            return "", {}
        return creator, self.profile.safe_private.block(creator_tag >> 16, creator)

    def _delete_private(self, ds: Dataset, tag: int) -> bool:
        del ds[tag]
        self.counts["X"] += 1
        return False

    def _private_text_needs_cleaning(self, raw: DataElement | RawDataElement) -> bool:
        """Whether a kept private text holds something the cleaner removes, read without converting
        it (an element left alone is written back as its own bytes)."""
        value = raw.value
        if isinstance(value, bytes):
            value = value.decode("latin-1").rstrip("\x00 ").split("\\")
        return any(self.cleaner.clean(v) != v for v in _values(value))

    def _private_element(self, ds: Dataset, tag: int, creator: str, rule: private_rules.PrivateRule) -> bool:
        """Act on one private element; a kept one is left as read (raw, written back as its own
        bytes) unless it is a sequence to look inside or its VR must be set."""
        disposition = rule.disposition
        if disposition == private_rules.DELETE:
            return self._delete_private(ds, tag)
        raw = ds.get_item(tag)
        vr = _converted_vr(raw, creator)
        if vr == "UN" and rule.vr in STR_VR and isinstance(raw.value, bytes):
            ds[tag] = raw = _with_declared_vr(tag, rule.vr, raw.value)
            vr = rule.vr
        elif vr == "UN" and rule.vr == "SQ" and isinstance(raw, RawDataElement):
            # A sequence only the safe list knows, read as opaque bytes (implicit VR): its items
            # may hold anything, so it is read as the sequence it is and cleaned, or dropped.
            ds[tag] = raw._replace(VR="SQ")
            try:
                ds[tag]  # noqa: B018 - converting reads the items
            except Exception:  # noqa: BLE001 - bytes that are no sequence: nothing safe to keep
                return self._delete_private(ds, tag)
            vr = "SQ"
        if disposition == private_rules.KEEP and vr in _TEXT_VRS and self._private_text_needs_cleaning(raw):
            self._map_strings(ds[tag], self.cleaner.clean)  # private free text kept: cleaned like any
            self.counts["C"] += 1
            return True
        if disposition == private_rules.KEEP and vr != "SQ":
            if raw.VR not in (None, vr):  # read as UN, known to pydicom: written with its VR, as ever
                ds[tag]  # noqa: B018 - converting is what gives it that VR
            self.counts["K"] += 1
            return True
        element = ds[tag]
        if disposition == private_rules.HASH_UID and element.VR in _UID_LIKE_VRS:
            self._map_strings(element, self._new_uid)
            self.counts["U"] += 1
        elif disposition == private_rules.OFFSET_DATE and element.VR in ("DA", "DT"):
            self._shift(element, fallback="")
            self.counts["C"] += 1
        elif disposition == private_rules.KEEP:
            if element.VR == "SQ":
                self._items(element)
            self.counts["K"] += 1
        else:  # a UID or date in a VR this node cannot rewrite safely
            return self._delete_private(ds, tag)
        return True


def _creator(ds: Dataset, creator_tag: int) -> str | None:
    """The Private Creator reserving a block, or None where it is missing or not one string.

    A creator read as LO in printable ASCII (as good as all are) is decoded here, as pydicom
    would in any character set, and stays raw: written back as read, not re-encoded.
    """
    raw = ds.get_item(creator_tag)
    value = raw.value if isinstance(raw, RawDataElement) and raw.VR in (None, "LO") else None
    if isinstance(value, bytes) and _PLAIN_CREATOR.fullmatch(value):
        return value.decode("ascii").rstrip("\x00 ")
    element = ds.get(creator_tag)
    return element.value if element is not None and isinstance(element.value, str) else None


class MetadataDeidentifier:
    """De-identifies headers under one profile; build once per process, call `apply` per instance."""

    def __init__(self, profile: Profile, *, method_description: str = "deid-node") -> None:
        self.profile = profile
        self.method_description = method_description
        self._rules: dict[int, Rule] = {}
        self._method_codes = tuple((c.value, c.meaning) for c in (profile.basic_code, *profile.option_codes))

    def rule_of(self, tag: int) -> Rule:
        """The profile's rule, else its stated default for an attribute the table does not name."""
        rule = self._rules.get(tag)
        if rule is None:
            rule = self._rules[tag] = self.profile.rule_for(tag) or self._default_for(tag)
        return rule

    def _default_for(self, tag: int) -> Rule:
        if tag & 0xFFFF == 0:
            return _GROUP_LENGTH
        try:
            vr = get_entry(tag)[0]
        except KeyError:
            return self.profile.unknown_public
        return self.profile.unlisted_by_vr.get(vr, self.profile.unlisted_public)

    def apply(self, ds: pydicom.Dataset, mappings: Mappings, phi: HeaderPhi) -> MetadataReport:
        patient = mappings.patient(str(ds.get("PatientID", "") or ""))
        run = _Pass(self, mappings, patient, phi, str(ds.get("SOPClassUID", "") or ""))
        run.walk(ds)
        self._follow_file_meta(ds)
        self._mark(ds, run.dates_shifted > 0)
        log.debug("metadata de-identified", actions=dict(run.counts), dates_shifted=run.dates_shifted)
        return MetadataReport(patient, self.profile.options, dict(run.counts))

    @staticmethod
    def _follow_file_meta(ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def _mark(self, ds: Dataset, dates_shifted: bool) -> None:
        """Say what was done, keeping what an earlier step (the pixel step) already said."""
        ds.add_new(_PATIENT_IDENTITY_REMOVED, "CS", "YES")
        method = f"{self.method_description}: {self.profile.name}"[:64]
        methods = _values(ds.get("DeidentificationMethod"))
        if method not in methods:
            methods.append(method)
        ds.add_new(_METHOD, "LO", methods if len(methods) > 1 else methods[0])
        codes = self._method_codes
        encoding = _file_encoding(ds)
        if _METHOD_CODES not in ds and encoding is not None and encoding[1]:
            ds[_METHOD_CODES] = _encoded_method_codes(codes, implicit=encoding[0])
        else:
            if _METHOD_CODES not in ds:
                ds.add_new(_METHOD_CODES, "SQ", Sequence())
            items = ds[_METHOD_CODES].value
            present = {(str(i.get("CodingSchemeDesignator", "")), str(i.get("CodeValue", ""))) for i in items}
            items.extend(_code_item(value, meaning) for value, meaning in codes if ("DCM", value) not in present)
        ds.add_new(_TEMPORAL_MODIFIED, "CS", self._temporal_state(dates_shifted))

    def _temporal_state(self, dates_shifted: bool) -> str:
        """MODIFIED when dates moved; otherwise what the profile does to the Study Date says."""
        if dates_shifted:
            return "MODIFIED"
        return "UNMODIFIED" if self.rule_of(_STUDY_DATE).code == "K" else "REMOVED"


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.add_new(0x00080100, "SH", value)
    item.add_new(0x00080102, "SH", "DCM")
    item.add_new(0x00080104, "LO", meaning)
    return item


def _file_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of the transfer syntax the instance will be written in."""
    syntax = declared_syntax(ds)
    if syntax is None or syntax.is_private or not syntax.is_transfer_syntax:
        return None
    return syntax.is_implicit_VR, syntax.is_little_endian


@lru_cache(maxsize=16)
def _encoded_method_codes(codes: tuple[tuple[str, str], ...], *, implicit: bool) -> RawDataElement:
    """The profile's De-identification Method Code Sequence, encoded once (it is the same on every
    instance) and added as read: written through pydicom, its items cost ~1 ms per instance, more
    than every other element the file keeps. The codes are ASCII, the same bytes in any charset."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    for value, meaning in codes:
        write_sequence_item(buffer, _code_item(value, meaning), [default_encoding])
    encoded = buffer.getvalue()
    return RawDataElement(BaseTag(_METHOD_CODES), None if implicit else "SQ", len(encoded), encoded, 0, implicit, True)
