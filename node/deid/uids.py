"""Which UIDs identify something that must be pseudonymised, and their replacement.

Registered DICOM UIDs (SOP Classes, Transfer Syntaxes, coding schemes, well-known frames of
reference) name a kind of thing, not a patient or a study, and software depends on them; they
are the only UIDs left as they are.
"""

from __future__ import annotations

from pydicom.uid import UID_dictionary

from node.deid.pseudonyms import Mappings

DICOM_ROOT = "1.2.840.10008."


def is_registered(uid: str) -> bool:
    return uid in UID_dictionary or uid.startswith(DICOM_ROOT)


def replace_uid(uid: str, mappings: Mappings) -> str:
    uid = uid.strip().rstrip("\x00")
    if not uid or is_registered(uid):
        return uid
    return mappings.uid(uid)
