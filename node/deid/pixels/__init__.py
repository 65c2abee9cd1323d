"""Burned-in PHI in pixel data: detect, read, black out, verify (issue 4)."""

from node.deid.pixels.cleaner import PixelCleaner
from node.deid.pixels.outcome import PixelCleaningError, PixelOutcome, PixelPolicyError

__all__ = ["PixelCleaner", "PixelCleaningError", "PixelOutcome", "PixelPolicyError"]
