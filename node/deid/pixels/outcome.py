"""What the pixel step tells the worker: a PHI-free summary, or a PHI-free reason to quarantine."""

from __future__ import annotations

from dataclasses import dataclass


class PixelCleaningError(Exception):
    """The instance could not be proven free of burned-in PHI; the message is the quarantine reason.

    Messages are built only from fixed phrases, counts and rule names, never from pixel text or
    header values, because they end up in logs and in the quarantine record.
    """


@dataclass(frozen=True)
class PixelOutcome:
    redacted: bool  # True if any pixel was changed
    frames_scanned: int
    boxes: int  # rectangles blacked out
    ocr_frames: int  # frames OCR actually ran on
    reason: str  # short, PHI-free


class PixelPolicyError(ValueError):
    """The pixel policy or region library cannot be used; the message names the file and the rule."""
