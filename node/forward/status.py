"""What a DICOM storage status means for the forwarder, wherever it came from: a C-STORE response
(PS3.4 B.2.3, PS3.7 C.4.2.1.4) or a STOW-RS response's FailureReason / WarningReason (PS3.18
10.5.3, which reuses the same codes); and the results every sender gives alike.

The line between REFUSED and WAIT: REFUSED only when the destination said something about this
instance (its SOP class, its content) that no retry can change; anything about the destination's
own state (out of resources, a processing failure, who may store there) is WAIT, so nothing is
quarantined while the destination or its operator recovers.

- DELIVERED: 0x0000, every Warning (the instance was stored: PS3.7 C.4.2.1.4 says a warning means
  "performed"; PS3.4 B.2.3 names 0xB000 coercion, 0xB006 elements discarded, 0xB007 data set
  does not match SOP class), and 0x0111 duplicate SOP instance (the destination already holds
  this UID: clean UIDs are derived, so a resend after a lost response is the usual cause).
- WAIT: 0xA7xx refused, out of resources; 0x0213 resource limitation; 0x0210 duplicate invocation;
  0x0110 processing failure (a general failure of the peer); 0x0124 not authorised (the operator
  must grant this node the right: like HTTP 401/403).
- REFUSED: 0xA9xx data set does not match SOP class, 0xCxxx cannot understand, 0x0122 SOP class
  not supported, 0x0117 invalid object instance, and any other failure code.
"""

from __future__ import annotations

import re

from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from node.forward.sender import Outcome, SendResult

DUPLICATE_SOP_INSTANCE = 0x0111
_TRANSIENT = frozenset({0x0110, 0x0124, 0x0210, 0x0213})
_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_COMMENT = 64  # ErrorComment is LO: at most 64 characters


def _category(code: int) -> str:
    category, _ = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))
    if category:
        return category
    if 0xB000 <= code <= 0xBFFF:
        return "Warning"
    return "Failure"


def outcome_of_status(code: int) -> Outcome:
    """DELIVERED, WAIT or REFUSED for a storage status code (see the module docstring)."""
    category = _category(code)
    if category in ("Success", "Warning") or code == DUPLICATE_SOP_INSTANCE:
        return Outcome.DELIVERED
    if 0xA700 <= code <= 0xA7FF or code in _TRANSIENT:
        return Outcome.WAIT
    return Outcome.REFUSED


def destination_comment(text: object) -> str:
    """The destination's own words (an ErrorComment), as a short single printable line. It is the
    peer's text about a clean instance, never a value of ours; cut to the length DICOM allows."""
    return _PRINTABLE.sub(" ", str(text)).strip()[:MAX_COMMENT]


def status_result(code: int, comment: object = "") -> SendResult:
    """The result for a storage status: the code, its meaning and the destination's comment."""
    _, meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))
    detail = f"0x{code:04X}"
    if code != 0x0000:
        detail += f" {meaning or _category(code).lower()}"
    said = destination_comment(comment) if comment else ""
    if said:
        detail += f": {said}"
    return SendResult(outcome_of_status(code), detail)


def unreadable_file(exc: Exception) -> SendResult:
    """A clean file that cannot be read (gone, damaged): no resend can succeed."""
    return SendResult(Outcome.REFUSED, f"unreadable clean file ({type(exc).__name__})")
