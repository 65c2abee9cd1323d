"""The meaning of PS3.15 action codes where it depends on the attribute: combined codes and dummies.

Combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) defer the choice to the IOD: keep the attribute
(with a dummy or replaced value) where the IOD requires it to have a value (Type 1), keep it
empty where it must be present (Type 2), remove it otherwise. Dummy values (D) must be valid for
their VR, so each VR has one that is.
"""

from __future__ import annotations

from pydicom.valuerep import MAX_VALUE_LEN

_BY_TYPE = {
    "X/Z": {1: "Z", 2: "Z", 3: "X"},
    "X/D": {1: "D", 2: "D", 3: "X"},
    "Z/D": {1: "D", 2: "Z", 3: "Z"},
    "X/Z/D": {1: "D", 2: "Z", 3: "X"},
    "X/Z/U*": {1: "U", 2: "Z", 3: "X"},
}
DUMMY_TEXT = "ANONYMIZED"
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


def resolve_combined(code: str, attribute_type: int) -> str:
    """The single code a combined code means for an attribute of this Type (1, 2 or 3)."""
    return _BY_TYPE[code][attribute_type] if code in _BY_TYPE else code


def dummy_value(vr: str) -> str | int | bytes:
    """A non-empty value valid for `vr` that carries no information."""
    if vr in _NUMERIC_VRS:
        return 0
    if vr in _BINARY_VRS:
        return b"\x00\x00"
    if vr == "DA":
        return DUMMY_DATE
    if vr == "DT":
        return DUMMY_DATE + DUMMY_TIME
    if vr == "TM":
        return DUMMY_TIME
    if vr == "AS":
        return "000D"
    return DUMMY_TEXT[: MAX_VALUE_LEN.get(vr, len(DUMMY_TEXT))]
