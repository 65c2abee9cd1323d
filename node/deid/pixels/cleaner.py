"""The pixel step: find burned-in PHI on every frame, black it out, verify, or fail closed.

Order of work for one instance: region rules for its device signature; the cheap detector on
every frame; OCR of each distinct candidate region once (cine loops repeat their text on every
frame); whole-frame OCR where the policy says "ocr" (BurnedInAnnotation=YES always does); mask;
read the masked frames again; write back only if a pixel changed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import structlog

from node.deid.phi import HeaderPhi
from node.deid.pixels.codec import Frames, Span, decode, display_gray, fill_value, write_back
from node.deid.pixels.detect import Rect, find_text
from node.deid.pixels.match import PhiMatcher, PresidioPatterns
from node.deid.pixels.ocr import ALL_READINGS, GREY, Crop, Word, read_crops
from node.deid.pixels.outcome import PixelCleaningError, PixelOutcome
from node.deid.pixels.policy import Action, Decision, DetectorSettings, MaskScope, PixelPolicy, load_policy
from node.deid.pixels.redact import mark_clean, mask_rect, paint
from node.deid.pixels.regions import matching_boxes

log = structlog.get_logger(__name__)

_CROP_CONTEXT = 0.3  # of the candidate height, around each crop, so OCR sees whole glyphs


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise PixelCleaningError("pixel step timed out")
        return left


@dataclass
class _Found:
    """Rectangles to black out: on given frames, and on every frame."""

    per_frame: dict[int, set[Rect]] = field(default_factory=dict)
    every_frame: set[Rect] = field(default_factory=set)
    ocr_frames: set[int] = field(default_factory=set)
    candidates: int = 0
    text_hits: int = 0  # rectangles placed because of text OCR read

    def add(self, frame: int | None, rect: Rect) -> None:
        """Black out `rect` on one frame, or on every frame when `frame` is None."""
        self.text_hits += 1
        if frame is None:
            self.every_frame.add(rect)
        else:
            self.per_frame.setdefault(frame, set()).add(rect)

    def rects(self) -> set[Rect]:
        return self.every_frame.union(*self.per_frame.values())




@dataclass(frozen=True)
class _View:
    """One frame as the detector and OCR see it."""

    gray: np.ndarray
    strokes: np.ndarray
    candidates: list[Rect]
    span: Span

    @classmethod
    def of(
        cls, frames: Frames, index: int, ds: pydicom.Dataset, settings: DetectorSettings, span: Span | None = None
    ) -> "_View":
        gray, span = display_gray(frames.values[index], frames.photometric, ds, span)
        highlight = frames.photometric.startswith("MONOCHROME")  # bone: bright text on bright anatomy
        strokes, candidates = find_text(gray, settings, highlight=highlight)
        return cls(gray, strokes, candidates, span)

    def crop(self, rect: Rect) -> Crop:
        window = (slice(rect.y, rect.y + rect.h), slice(rect.x, rect.x + rect.w))
        return Crop(self.gray[window], self.strokes[window], rect)


class _Reader:
    """Reads text on an instance's frames; remembers what each distinct region said."""

    def __init__(self, policy: PixelPolicy, deadline: _Deadline) -> None:
        self._policy = policy
        self._deadline = deadline
        self._seen: dict[tuple[Rect, bytes], list[Word]] = {}
        self.read_frames: set[int] = set()  # frames that had a region OCR had not read before

    def _key(self, gray: np.ndarray, rect: Rect) -> tuple[Rect, bytes]:
        region = gray[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w]
        return rect, hashlib.blake2b(region.tobytes(), digest_size=16).digest()

    def regions(self, views: dict[int, _View]) -> dict[int, list[tuple[Rect, list[Word]]]]:
        """Per frame: each candidate region with the words OCR read in it (read once per distinct region)."""
        settings = self._policy.settings
        wanted: dict[int, list[tuple[Rect, tuple[Rect, bytes]]]] = {}
        fresh: dict[tuple[Rect, bytes], Crop] = {}
        for index, view in views.items():
            self._deadline.remaining()
            rows, cols = view.gray.shape
            for candidate in view.candidates:
                context = max(2, round(_CROP_CONTEXT * candidate.h))
                rect = candidate.grown(context, rows, cols)
                key = self._key(view.gray, rect)
                wanted.setdefault(index, []).append((candidate, key))
                if key not in self._seen and key not in fresh:
                    fresh[key] = view.crop(rect)
                    self.read_frames.add(index)
        keys = list(fresh)
        words = read_crops([fresh[k] for k in keys], settings.ocr, self._deadline.remaining())
        by_origin: dict[Rect, list[Word]] = {k[0]: [] for k in keys}
        for word in words:
            by_origin.setdefault(_origin_of(word, keys), []).append(word)
        for key in keys:
            self._seen[key] = by_origin.get(key[0], [])
        return {i: [(c, self._seen[k]) for c, k in items] for i, items in wanted.items()}

    def whole(self, view: _View, *, thorough: bool) -> list[Word]:
        """OCR one whole frame; thorough: upscaled (at most 2x, to a bounded size), every rendering;
        otherwise (verification) as shown, grey only: a reading independent of the stroke map."""
        rows, cols = view.gray.shape
        settings = self._policy.settings.ocr
        scale = max(1.0, min(2.0, settings.full_frame_max_side / max(rows, cols))) if thorough else 1.0
        as_one_line = settings.model_copy(
            update={"target_text_height": int(np.ceil(scale * rows)), "max_upscale": scale}
        )
        crop = view.crop(Rect(0, 0, cols, rows))
        readings = ALL_READINGS if thorough else (GREY,)
        return read_crops([crop], as_one_line, self._deadline.remaining(), readings=readings)


def _origin_of(word: Word, keys: list[tuple[Rect, bytes]]) -> Rect:
    return keys[word.crop][0]


def _chosen(words: list[Word], decision: Decision, matcher: PhiMatcher) -> list[list[Word]]:
    """What to black out: every word (all_text), or the PHI phrases."""
    return [[w] for w in words] if decision.mask is MaskScope.ALL_TEXT else matcher.phi_phrases(words)


def _spanning(rects: list[Rect]) -> Rect:
    spanned = rects[0]
    for rect in rects[1:]:
        spanned = spanned.union(rect)
    return spanned


def _frame_order(count: int, limit: int) -> list[int]:
    """Up to `limit` frames spread over the loop: first, last, and between."""
    if limit <= 0:
        return []
    return sorted(set(np.linspace(0, count - 1, num=min(limit, count)).round().astype(int).tolist()))


class PixelCleaner:
    def __init__(self, policy: PixelPolicy, *, timeout_seconds: float = 300.0) -> None:
        self._policy = policy
        self._timeout = timeout_seconds
        matching = policy.settings.matching
        self._patterns = PresidioPatterns(matching) if matching.patterns or matching.presidio_entities else None

    @classmethod
    def from_policy_file(cls, path: Path, *, timeout_seconds: float = 300.0) -> "PixelCleaner":
        return cls(load_policy(Path(path)), timeout_seconds=timeout_seconds)

    def clean(self, ds: pydicom.Dataset, phi: HeaderPhi) -> PixelOutcome:
        if "PixelData" not in ds:
            return PixelOutcome(False, 0, 0, 0, "no pixel data")
        started = time.monotonic()
        try:
            outcome = self._clean(ds, phi, _Deadline(self._timeout))
        except PixelCleaningError as exc:
            log.warning("pixels.quarantine", reason=str(exc))
            raise
        except Exception as exc:  # anything unexpected: fail closed, reason without content
            log.warning("pixels.quarantine", reason=type(exc).__name__)
            raise PixelCleaningError(f"pixel step failed ({type(exc).__name__})") from exc
        log.info(
            "pixels.done", redacted=outcome.redacted, frames=outcome.frames_scanned, boxes=outcome.boxes,
            ocr_frames=outcome.ocr_frames, reason=outcome.reason, seconds=round(time.monotonic() - started, 3),
        )
        return outcome

    def _clean(self, ds: pydicom.Dataset, phi: HeaderPhi, deadline: _Deadline) -> PixelOutcome:
        decision = self._policy.decide(ds)
        rule_names, region_boxes = matching_boxes(self._policy.region_rules, ds)
        if decision.action is Action.SKIP and not region_boxes:
            return PixelOutcome(False, 0, 0, 0, "policy skip")
        frames = decode(ds)
        count, rows, cols = frames.values.shape[:3]
        found = _Found(every_frame={Rect(*b).grown(0, rows, cols) for b in region_boxes} - {Rect(0, 0, 0, 0)})
        matcher = PhiMatcher(phi, self._policy.settings.matching, self._patterns)
        reader = _Reader(self._policy, deadline)
        spans: dict[int, Span] = {}
        if decision.action is not Action.SKIP:
            views = {i: _View.of(frames, i, ds, self._policy.settings.detector) for i in range(count)}
            spans = {i: view.span for i, view in views.items()}
            self._search(views, decision, matcher, reader, found)
        reason = self._reason(rule_names, decision, found)
        rects = found.rects()
        if not rects:
            return PixelOutcome(False, count, 0, len(found.ocr_frames), reason)
        changed = self._paint(frames, ds, found)
        self._verify(frames, ds, spans, changed, matcher, reader, deadline)
        write_back(ds, frames)
        mark_clean(ds)
        return PixelOutcome(True, count, len(rects), len(found.ocr_frames), reason)

    def _search(
        self, views: dict[int, _View], decision: Decision, matcher: PhiMatcher, reader: _Reader, found: _Found
    ) -> None:
        settings = self._policy.settings
        for index, regions in reader.regions(views).items():
            strokes = views[index].strokes
            found.candidates += len(regions)
            words = [w for _, ws in regions for w in ws]
            limits = {id(w): c.grown(2, *strokes.shape) for c, ws in regions for w in ws}
            for phrase in _chosen(words, decision, matcher):
                rects = [mask_rect(w.rect, strokes, limits[id(w)], settings.masking) for w in phrase]
                found.add(index, _spanning(rects))
        found.ocr_frames |= reader.read_frames
        if decision.action is Action.OCR:
            for index in _frame_order(len(views), settings.ocr.full_frames):
                found.ocr_frames.add(index)
                self._whole_frame(views[index], decision, matcher, reader, found)

    def _whole_frame(
        self, view: _View, decision: Decision, matcher: PhiMatcher, reader: _Reader, found: _Found
    ) -> None:
        """Text read on a whole frame is masked on every frame: overlays do not move in a loop."""
        settings = self._policy.settings
        strokes = view.strokes
        words = reader.whole(view, thorough=True)
        for phrase in _chosen(words, decision, matcher):
            rects = [
                mask_rect(w.rect, strokes, w.rect.grown(max(2, w.rect.h // 2), *strokes.shape), settings.masking)
                for w in phrase
            ]
            found.add(None, _spanning(rects))

    @staticmethod
    def _paint(frames: Frames, ds: pydicom.Dataset, found: _Found) -> list[int]:
        fill = fill_value(frames, ds)
        count = frames.values.shape[0]
        for index in range(count):
            for rect in found.every_frame | found.per_frame.get(index, set()):
                paint(frames.values, index, rect, fill)
        return [i for i in range(count) if found.every_frame or i in found.per_frame]

    def _verify(
        self, frames: Frames, ds: pydicom.Dataset, spans: dict[int, Span], changed: list[int], matcher: PhiMatcher,
        reader: _Reader, deadline: _Deadline,
    ) -> None:
        """Read the masked frames again (changed regions, and whole frames); any PHI left fails the instance.

        Frames are shown with their original spans, so regions away from the masks are the same
        pixels as before and come from the reader's memory; only what the masks touched is read anew.
        """
        settings = self._policy.settings.detector
        views = {i: _View.of(frames, i, ds, settings, spans.get(i)) for i in changed}
        readings = [[w for _, ws in regions for w in ws] for regions in reader.regions(views).values()]
        for position in _frame_order(len(changed), self._policy.settings.verify.full_frames):
            deadline.remaining()
            readings.append(reader.whole(views[changed[position]], thorough=False))
        if any(matcher.phi_phrases(words) for words in readings):  # one frame's reading at a time
            raise PixelCleaningError("verification OCR still finds PHI after masking")

    @staticmethod
    def _reason(rule_names: list[str], decision: Decision, found: _Found) -> str:
        parts = [f"region rule {name}" for name in rule_names[:1]]
        if found.text_hits:
            parts.append("ocr text" if decision.mask is MaskScope.ALL_TEXT else "ocr phi")
        if not parts:
            parts.append("no phi" if found.candidates else "no text")
        return ", ".join(parts)
