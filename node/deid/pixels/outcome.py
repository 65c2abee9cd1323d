"""What the pixel step tells the worker: a PHI-free summary, or a PHI-free reason to quarantine."""

from __future__ import annotations

from dataclasses import dataclass


class PixelCleaningError(Exception):
    """The instance could not be proven free of burned-in PHI; the message is the quarantine reason.

    Messages are built only from fixed phrases, counts and rule names, never from pixel text or
    header values, because they end up in logs and in the quarantine record.
    """


@dataclass(frozen=True)
class MaskedBox:
    """One rectangle blacked out, in pixels of the frame; frame None: on every frame. Geometry
    only, so a review page or a dry-run report can outline what was masked."""

    frame: int | None
    x: int
    y: int
    w: int
    h: int

    def on(self, frame: int) -> bool:
        return self.frame is None or self.frame == frame


@dataclass(frozen=True)
class PixelOutcome:
    redacted: bool  # True if any pixel was changed
    frames_scanned: int
    boxes: int  # rectangles blacked out
    ocr_frames: int  # frames OCR actually ran on
    reason: str  # short, PHI-free
    masked: tuple[MaskedBox, ...] = ()  # the rectangles themselves

    def audit_detail(self) -> str:
        """How the worker records the step in the audit trail; /metrics sums the frame counts."""
        return f"pixels={self.reason} frames={self.frames_scanned} ocr={self.ocr_frames}"


class PixelPolicyError(ValueError):
    """The pixel policy or region library cannot be used; the message names the file and the rule."""
