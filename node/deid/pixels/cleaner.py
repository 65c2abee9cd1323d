"""The pixel step: find burned-in PHI on every frame, black it out, verify, or fail closed.

Order of work for one instance: region rules for its device signature; the cheap detector on
every frame; candidate lines of letters too small to read reliably masked unread
(masking.unreadable_height); OCR of each other distinct candidate region once (cine loops repeat
their text on every frame, a study its banner on every instance: words read are remembered),
with whole frames where the policy says "ocr" (BurnedInAnnotation=YES always does), all in one
tesseract call; mask; detect again on the masked frames and read what the masks changed (and
whole frames where the policy's verification asks for them), again in one call, masking what PHI
that reading still finds and reading again (verify.remask_rounds) before failing closed; write
back only if a pixel changed. A tesseract call costs ~0.15 s before it reads anything, so the number
of calls, not the number of regions, sets the price of an image with text.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import astuple, dataclass, field, replace
from enum import Enum
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import structlog

from node.deid.phi import HeaderPhi
from node.deid.pixels.codec import Frames, Span, decode, display, fill_value, write_back
from node.deid.pixels.detect import Rect, find_text, small_text_line, spanning
from node.deid.pixels.image_area import inside_any, ultrasound_regions
from node.deid.pixels.match import PhiMatcher, PresidioPatterns, text_lines
from node.deid.pixels.ocr import GREY, Crop, Word, read_crops
from node.deid.pixels.outcome import MaskedBox, PixelCleaningError, PixelOutcome
from node.deid.pixels.policy import (
    Action, Decision, DetectorSettings, MaskScope, OcrSettings, PixelPolicy, load_policy,
)
from node.deid.pixels.readers import TextLine, TextReader, reader_for
from node.deid.pixels.redact import mark_clean, mask_rect, paint
from node.deid.pixels.regions import Box, matching_boxes

log = structlog.get_logger(__name__)

_CROP_CONTEXT = 0.3  # of the candidate height, around each crop, so OCR sees whole glyphs
_REGIONS_REMEMBERED = 4096  # distinct regions whose OCR words a cleaner keeps across instances


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise PixelCleaningError("pixel step timed out")
        return left


class _Verdict(Enum):
    """What a reading of one place says, for deny by default."""

    PHI = "phi"  # PHI or a label: the place goes, whatever another reading says
    SAFE = "safe"  # sure, and all it says is in the vocabulary: the place may stay
    UNSURE = "unsure"  # anything else: the place goes unless another reading is safe
    BLANK = "blank"  # a candidate read as nothing that is no line of letters: not text


class _Hit(Enum):
    READ = "read"  # text OCR read (PHI, or any text where the policy masks all)
    OUTSIDE = "outside"  # unread: text outside the image areas
    UNREADABLE = "unreadable"  # unread: text too small to read reliably
    VERIFIED = "verified"  # PHI the verification read on the masked frame that the search missed


@dataclass
class _Found:
    """Rectangles to black out: on given frames, and on every frame."""

    per_frame: dict[int, set[Rect]] = field(default_factory=dict)
    every_frame: set[Rect] = field(default_factory=set)
    ocr_frames: set[int] = field(default_factory=set)
    candidates: int = 0
    hits: Counter[_Hit] = field(default_factory=Counter)  # rectangles placed, by why

    def add(self, frame: int | None, rect: Rect, hit: _Hit = _Hit.READ) -> None:
        """Black out `rect` on one frame, or on every frame when `frame` is None."""
        self.hits[hit] += 1
        if frame is None:
            self.every_frame.add(rect)
        else:
            self.per_frame.setdefault(frame, set()).add(rect)

    def rects(self) -> set[Rect]:
        return self.every_frame.union(*self.per_frame.values())

    def masked(self) -> tuple[MaskedBox, ...]:
        every = [MaskedBox(None, r.x, r.y, r.w, r.h) for r in sorted(self.every_frame, key=astuple)]
        each = [MaskedBox(i, r.x, r.y, r.w, r.h) for i in sorted(self.per_frame)
                for r in sorted(self.per_frame[i] - self.every_frame, key=astuple)]
        return tuple(every + each)


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
        gray, colour, span = display(frames.values[index], frames.photometric, ds, span)
        highlight = frames.photometric.startswith("MONOCHROME")  # bone: bright text on bright anatomy
        strokes, candidates = find_text(gray, settings, highlight=highlight, colour=colour)
        return cls(gray, strokes, candidates, span)

    def crop(self, rect: Rect, own: Rect | None = None) -> Crop:
        """`rect` of the frame; with `own` (the candidate inside it), strokes outside `own` are
        dropped: they belong to neighbouring lines, and tesseract would read their cut-off tops
        and bottoms as words ("----"), at a cost and with nothing to find."""
        strokes = self.strokes[rect.window]
        if own is not None and own != rect:
            kept = np.zeros_like(strokes)
            inner = Rect(own.x - rect.x, own.y - rect.y, own.w, own.h).window  # `own` within the crop
            kept[inner] = strokes[inner]
            strokes = kept
        return Crop(self.gray[rect.window], strokes, rect)

    def without_new_strokes(self, earlier: np.ndarray) -> "_View":
        """This view keeping only candidates with a stroke pixel that was one in `earlier` too."""
        kept = [c for c in self.candidates if (self.strokes[c.window] & earlier[c.window]).any()]
        return replace(self, candidates=kept)


Regions = dict[int, list[tuple[Rect, list[Word]]]]  # per frame: each candidate with the words read in it


RegionKey = tuple[Rect, bytes]  # a candidate box and the hash of its own pixels


class _Readings:
    """What OCR read in each distinct region, kept across the instances one cleaner sees (one per
    worker process): a study repeats its overlays on every instance (the banner with the patient's
    name, the device's settings), and a tesseract call costs ~0.15 s before it reads a word. What
    the words mean is decided per instance, against that instance's header. The least recently
    used go first; in memory only, like the images themselves."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._words: OrderedDict[RegionKey, list[Word]] = OrderedDict()

    def get(self, key: RegionKey) -> list[Word] | None:
        words = self._words.get(key)
        if words is not None:
            self._words.move_to_end(key)
        return words

    def put(self, key: RegionKey, words: list[Word]) -> None:
        self._words[key] = words
        self._words.move_to_end(key)
        while len(self._words) > self._capacity:
            self._words.popitem(last=False)

    def clear(self) -> None:
        self._words.clear()


class _Reader:
    """Reads text on an instance's frames; a distinct region is read once (cine loops repeat their
    text on every frame), and not at all if an earlier instance showed the same."""

    def __init__(self, settings: OcrSettings, deadline: _Deadline, readings: _Readings) -> None:
        self._settings = settings
        self._deadline = deadline
        self._readings = readings
        self.read_frames: set[int] = set()  # frames that had a region OCR had not read before

    @staticmethod
    def _key(gray: np.ndarray, candidate: Rect) -> RegionKey:
        """A region is known by the candidate's own pixels, which hold all its strokes: a mask or
        a moving image next to it changes only the context around it, not what it says."""
        return candidate, hashlib.blake2b(gray[candidate.window].tobytes(), digest_size=16).digest()

    def read(self, views: dict[int, _View]) -> Regions:
        """Each frame's candidate regions with the words read in them: what was not read before,
        all in one tesseract call."""
        settings = self._settings
        wanted: dict[int, list[tuple[Rect, RegionKey]]] = {}
        known: dict[RegionKey, list[Word]] = {}
        fresh: dict[RegionKey, Crop] = {}
        for index, view in views.items():
            self._deadline.remaining()
            rows, cols = view.gray.shape
            for candidate in view.candidates:
                key = self._key(view.gray, candidate)
                wanted.setdefault(index, []).append((candidate, key))
                if key in known or key in fresh:
                    continue
                earlier = self._readings.get(key)
                if earlier is not None:
                    known[key] = earlier
                    continue
                context = max(2, round(_CROP_CONTEXT * candidate.h))
                crop = view.crop(candidate.grown(context, rows, cols), candidate)
                fresh[key] = _as_policy_reads(crop, candidate.h, settings)
                self.read_frames.add(index)
        keys = list(fresh)
        crops = [fresh[k] for k in keys]
        words = _per_crop(read_crops(crops, settings, self._deadline.remaining()), len(crops))
        for key, read in zip(keys, words):
            known[key] = read
            self._readings.put(key, read)
        return {i: [(c, known[k]) for c, k in items] for i, items in wanted.items()}


def _as_policy_reads(crop: Crop, height: int, settings: OcrSettings) -> Crop:
    """Small text in every rendering, upscaled to the target height; large text read once, and
    upscaled less (tesseract's cost grows with the sheet's area). Heights are of the crop."""
    if height < settings.single_reading_from:
        return replace(crop, readings=settings.readings)
    target = settings.large_text_height or settings.target_text_height
    scale = float(min(settings.max_upscale, max(1.0, target / crop.origin.h)))
    return replace(crop, readings=settings.readings[:1], scale=scale)


def _per_crop(words: list[Word], count: int) -> list[list[Word]]:
    grouped: list[list[Word]] = [[] for _ in range(count)]
    for word in words:
        grouped[word.crop].append(word)
    return grouped


def _chosen(words: list[Word], decision: Decision, matcher: PhiMatcher) -> list[list[Word]]:
    """What to black out: every word (all_text), or the PHI phrases."""
    return [[w] for w in words] if decision.mask is MaskScope.ALL_TEXT else matcher.phi_phrases(words)


def _line_words(line: TextLine) -> list[Word]:
    """A read line as words, each given the share of the line's box its characters take: the PHI
    matcher judges words and runs of words."""
    count = max(1, len(line.text))
    words = []
    for match in re.finditer(r"\S+", line.text):
        x0 = line.rect.x + line.rect.w * match.start() // count
        x1 = line.rect.x + line.rect.w * match.end() // count
        rect = Rect(x0, line.rect.y, max(1, x1 - x0), line.rect.h)
        words.append(Word(match.group(), rect, 0, GREY, 100 * line.confidence))
    return words


def _same_line(a: Rect, b: Rect) -> bool:
    """Do two text boxes sit on one line: overlapping rows, a gap of at most three text heights?"""
    overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
    return overlap >= 0.5 * min(a.h, b.h) and gap <= 3 * max(a.h, b.h)


def _whole_lines(masked: list[Rect], others: list[Rect]) -> list[Rect]:
    """`masked` with every other box that sits on a line with one of them, transitively: a line
    holding PHI goes whole (a first name beside a family name, a value beside its label)."""
    masked, others = list(masked), list(others)
    joined = True
    while joined:
        joined = False
        for box in list(others):
            if any(_same_line(box, m) for m in masked):
                masked.append(box)
                others.remove(box)
                joined = True
    return masked

def _frame_order(count: int, limit: int) -> list[int]:
    """Up to `limit` frames spread over the loop: first, last, and between."""
    if limit <= 0:
        return []
    return sorted(set(np.linspace(0, count - 1, num=min(limit, count)).round().astype(int).tolist()))


class PixelCleaner:
    def __init__(self, policy: PixelPolicy, *, timeout_seconds: float = 300.0) -> None:
        self._policy = policy
        self._timeout = timeout_seconds
        self._readings = _Readings(_REGIONS_REMEMBERED)
        matching = policy.settings.matching
        self._patterns = PresidioPatterns(matching) if matching.patterns or matching.presidio_entities else None
        readers = policy.settings.readers
        self._whole_reader: TextReader = reader_for(readers.whole_frame, readers.threads)
        self._second_reader: TextReader = reader_for(readers.second_look, readers.threads)
        self.second_look_failures = 0  # instances the second look failed: how often it fires

    def forget_readings(self) -> None:
        """Drop what OCR read on earlier instances: the next instances are read afresh."""
        self._readings.clear()

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
        views = {i: _View.of(frames, i, ds, self._policy.settings.detector) for i in range(count)}
        boxes = _boxes_over_text(region_boxes, views, rows, cols)
        rule_names = rule_names if boxes else []
        found = _Found(every_frame=boxes)
        matcher = PhiMatcher(phi, self._policy.settings.matching, self._patterns)
        reader = _Reader(self._policy.settings.ocr, deadline, self._readings)
        areas = ultrasound_regions(ds, rows, cols) if decision.mask is MaskScope.ALL_TEXT_OUTSIDE_IMAGE else []
        if decision.action is not Action.SKIP:
            self._search(views, decision, matcher, reader, found, areas, deadline)
        if found.rects():
            self._mask_until_verified(frames, ds, views, found, decision, matcher, reader)
            write_back(ds, frames)
            mark_clean(ds)
        rects = found.rects()  # after verification, which may have masked more
        reason = self._reason(rule_names, decision, found)
        return PixelOutcome(bool(rects), count, len(rects), len(found.ocr_frames), reason, found.masked())

    def _search(
        self, views: dict[int, _View], decision: Decision, matcher: PhiMatcher, reader: _Reader, found: _Found,
        areas: list[Rect], deadline: _Deadline,
    ) -> None:
        """Candidates outside declared image areas are masked unread; the rest are read (tesseract,
        one call), and whole frames (where the action is "ocr", or where the detector found text)
        by the whole-frame reader; what both read is masked as the policy's scope says."""
        settings = self._policy.settings
        whole_frames = self._whole_frames(views, decision)
        if areas:
            views = {i: self._mask_outside(i, view, areas, found) for i, view in views.items()}
        if settings.masking.unreadable_height:
            views = {i: self._mask_unreadable(i, view, found) for i, view in views.items()}
        regions = reader.read(views)
        lines: dict[int, list[TextLine]] = {}
        for index in whole_frames:
            deadline.remaining()
            lines[index] = self._whole_reader.read(views[index].gray)
        found.ocr_frames |= reader.read_frames | set(whole_frames)
        if decision.mask in (MaskScope.DENY, MaskScope.ALL_TEXT_OUTSIDE_IMAGE):
            self._deny(views, regions, lines, decision, matcher, found, areas)
            return
        chosen = partial(_chosen, decision=decision, matcher=matcher)
        for index, frame_regions in regions.items():  # candidates inside the image areas, if any
            found.candidates += len(frame_regions)
            for rect in self._region_masks(frame_regions, views[index].strokes, chosen):
                found.add(index, rect)
        for index, frame_lines in lines.items():
            found.candidates += len(frame_lines)
            for line in frame_lines:
                outside = bool(areas) and not inside_any(line.rect, areas)
                verdict = self._verdict(line.text, line.confidence, _line_words(line), decision, matcher)
                if outside or decision.mask is MaskScope.ALL_TEXT or verdict is _Verdict.PHI:
                    found.add(None, self._line_mask(line.rect, views[index].strokes), _Hit.OUTSIDE if outside else _Hit.READ)

    def _whole_frames(self, views: dict[int, _View], decision: Decision) -> list[int]:
        """Frames the whole-frame reader reads: for "ocr" any, at most ocr.full_frames; for
        "detect" those where the detector found a candidate, at most readers.detected_frames;
        spread over the loop."""
        settings = self._policy.settings
        limit = settings.ocr.full_frames
        if decision.action is Action.OCR:
            pool = sorted(views)
        else:
            pool = [i for i in sorted(views) if views[i].candidates]
            limit = min(limit, settings.readers.detected_frames)
        return [pool[p] for p in _frame_order(len(pool), limit)]

    def _deny(
        self, views: dict[int, _View], regions: Regions, lines: dict[int, list[TextLine]], decision: Decision,
        matcher: PhiMatcher, found: _Found, areas: list[Rect],
    ) -> None:
        """Deny by default. Each place text was seen (a detector candidate, a line the whole-frame
        reader found) goes unless a reading of it (its own, or the other reader's of the same
        place) is sure and wholly safe, and none holds PHI or a label. A candidate read as nothing
        goes if it holds a line of letters. What sits on a line with text that goes, goes too;
        all of it as whole boxes, not word by word. Whole-frame lines go on every frame."""
        for index, view in views.items():
            frame_regions = regions.get(index, [])
            frame_lines = lines.get(index, [])
            found.candidates += len(frame_regions) + len(frame_lines)
            own = [self._candidate_verdict(c, ws, view.strokes, decision, matcher) for c, ws in frame_regions]
            read = [self._verdict(ln.text, ln.confidence, _line_words(ln), decision, matcher) for ln in frame_lines]
            boxes = [c for c, _ in frame_regions] + [ln.rect for ln in frame_lines]
            verdicts = own + read
            phi, unsure, kept = [], [], []
            for box, verdict in zip(boxes, verdicts):
                others = {v for b, v in zip(boxes, verdicts) if b is not box and b.overlaps(box)}
                if _Verdict.PHI in others | {verdict} or (areas and not inside_any(box, areas)):
                    phi.append(box)
                elif _Verdict.SAFE in others | {verdict} or (verdict is _Verdict.BLANK and not others):
                    kept.append(box)
                else:
                    unsure.append(box)
            for box in _whole_lines(phi, kept) + unsure:
                outside = bool(areas) and not inside_any(box, areas)
                if box in boxes[len(own):]:  # a whole-frame reader's line: on every frame
                    found.add(None, self._line_mask(box, view.strokes), _Hit.OUTSIDE if outside else _Hit.READ)
                else:
                    found.add(index, mask_rect(box, view.strokes, box.grown(2, *view.strokes.shape), self._policy.settings.masking))

    def _verdict(self, text: str, confidence: float, words: list[Word], decision: Decision, matcher: PhiMatcher) -> "_Verdict":
        """One reading of one place: PHI (or a label), sure and wholly safe, or unsure."""
        vocabulary = self._policy.vocabulary
        if vocabulary.labelled(text) or matcher.phi_phrases(words):
            return _Verdict.PHI
        if confidence >= self._policy.settings.deny.min_confidence and vocabulary.safe_line(text, decision.modality):
            return _Verdict.SAFE
        return _Verdict.UNSURE

    def _candidate_verdict(
        self, candidate: Rect, words: list[Word], strokes: np.ndarray, decision: Decision, matcher: PhiMatcher,
    ) -> "_Verdict":
        """A detector candidate's readings (one per rendering): PHI if any holds PHI or a label,
        safe if one is sure and wholly safe, else unsure. A candidate that is no line of letters
        (a blob of anatomy the detector let through) and reads as nothing sure is blank: not text."""
        if matcher.phi_phrases(words):
            return _Verdict.PHI
        detector, settings = self._policy.settings.detector, self._policy.settings
        letters = small_text_line(
            strokes, candidate, detector.min_text_height, detector.max_text_height, settings.masking.unreadable_min_letters
        )
        sure = 100 * settings.deny.text_confidence
        readings = [[w for line in lines for w in line] for lines in _by_reading(words).values()]
        readings = [r for r in readings if any(any(ch.isalnum() for ch in w.text) for w in r)]
        if not letters:
            readings = [r for r in readings if min(w.confidence for w in r) >= sure]
        if not readings:
            return _Verdict.UNSURE if letters else _Verdict.BLANK
        verdicts = {
            self._verdict(" ".join(w.text for w in r), min(w.confidence for w in r) / 100, r, decision, matcher)
            for r in readings
        }
        if _Verdict.PHI in verdicts:
            return _Verdict.PHI
        return _Verdict.SAFE if _Verdict.SAFE in verdicts else _Verdict.UNSURE

    def _region_masks(
        self, frame_regions: list[tuple[Rect, list[Word]]], strokes: np.ndarray,
        choose: Callable[[list[Word]], list[list[Word]]],
    ) -> list[Rect]:
        """One mask per chosen phrase of a frame's region words, each word's mask kept within its candidate."""
        limits = {id(w): c.grown(2, *strokes.shape) for c, ws in frame_regions for w in ws}
        masking = self._policy.settings.masking
        words = [w for _, ws in frame_regions for w in ws]
        return [spanning([mask_rect(w.rect, strokes, limits[id(w)], masking) for w in phrase])
                for phrase in choose(words)]

    def _mask_outside(self, index: int, view: _View, areas: list[Rect], found: _Found) -> _View:
        """Black out, unread, each candidate outside the image areas on this frame, with the
        policy's margin around its whole box (what sits beside text there, an underline or a
        cursor, goes with it); the view keeps the rest to read. Per frame, not on every frame:
        a mask paints its whole box, and on frames without the text that repaints background."""
        rows, cols = view.strokes.shape
        masking = self._policy.settings.masking
        inside = []
        for candidate in view.candidates:
            if inside_any(candidate, areas):
                inside.append(candidate)
                continue
            found.candidates += 1
            margin = max(masking.min_margin, round(masking.margin_fraction * candidate.h))
            found.add(index, candidate.grown(margin, rows, cols), _Hit.OUTSIDE)
        return replace(view, candidates=inside)

    def _mask_unreadable(self, index: int, view: _View, found: _Found) -> _View:
        """Black out, unread, each candidate line of letters too small for OCR to read reliably
        (fail closed: a misread name or date would not match the header, and stay); the view keeps
        the rest to read. Only lines of several letters of one height: a glyph-sized blob of
        anatomy is not masked, so images without text stay untouched. An instance whose
        candidates are all this small costs no tesseract call."""
        masking = self._policy.settings.masking
        shortest = self._policy.settings.detector.min_text_height
        kept = []
        for candidate in view.candidates:
            if not small_text_line(
                view.strokes, candidate, shortest, masking.unreadable_height, masking.unreadable_min_letters
            ):
                kept.append(candidate)
                continue
            found.candidates += 1
            limit = candidate.grown(2, *view.strokes.shape)
            found.add(index, mask_rect(candidate, view.strokes, limit, masking), _Hit.UNREADABLE)
        return replace(view, candidates=kept)

    def _line_mask(self, line: Rect, strokes: np.ndarray) -> Rect:
        """A reader's line box and the strokes it touches, with the policy's margin: the box is
        kept whole, as the detector may have seen only part of the line's strokes."""
        masking = self._policy.settings.masking
        margin = max(masking.min_margin, round(masking.margin_fraction * line.h))
        return spanning([line.grown(margin, *strokes.shape), self._word_mask(line, strokes)])

    def _word_mask(self, word: Rect, strokes: np.ndarray) -> Rect:
        limit = word.grown(max(2, word.h // 2), *strokes.shape)
        return mask_rect(word, strokes, limit, self._policy.settings.masking)

    @staticmethod
    def _paint(frames: Frames, ds: pydicom.Dataset, found: _Found) -> list[int]:
        fill = fill_value(frames, ds)
        values = frames.writable()
        count = values.shape[0]
        for index in range(count):
            for rect in found.every_frame | found.per_frame.get(index, set()):
                paint(values, index, rect, fill)
        return [i for i in range(count) if found.every_frame or i in found.per_frame]

    def _mask_until_verified(
        self, frames: Frames, ds: pydicom.Dataset, views: dict[int, _View], found: _Found, decision: Decision,
        matcher: PhiMatcher, reader: _Reader,
    ) -> None:
        """Paint the masks and verify. PHI the verification reads in a region the detector finds
        again (text the search saw but misread: OCR of a line whose neighbours are now black may
        read a date it garbled) is masked too and verified again, `remask_rounds` times. PHI read
        only on a whole frame means the detector missed text: the instance fails at once, as it
        does when PHI is still read after the last round; where the search missed text only the
        second look sees (PHI read on the whole frame while no region holds any), at once."""
        rounds = self._policy.settings.verify.remask_rounds
        for round_number in range(rounds + 1):
            changed = self._paint(frames, ds, found)
            leftover, on_whole_frame = self._verify(frames, ds, views, changed, decision, matcher, reader)
            if not leftover and not on_whole_frame:
                return
            if round_number == rounds or (on_whole_frame and not leftover):
                self.second_look_failures += on_whole_frame
                raise PixelCleaningError("verification OCR still finds PHI after masking")
            for index, rect in leftover:
                found.add(index, rect, _Hit.VERIFIED)

    def _verify(
        self, frames: Frames, ds: pydicom.Dataset, before: dict[int, _View], changed: list[int], decision: Decision,
        matcher: PhiMatcher, reader: _Reader,
    ) -> tuple[list[tuple[int, Rect]], bool]:
        """Detect again on the masked frames and read what changed (and whole frames, for the
        actions the policy's verification names), in one call: masks for the PHI still read in
        the detector's regions, and whether a whole-frame reading still reads PHI.

        Frames are shown with their original spans, so regions away from the masks are the same
        pixels as before and come from the reader's memory; only what the masks touched is read anew.
        A candidate whose strokes all appeared with the masks is not read: a sliver of a grey band
        left between two black boxes, or a box's edge, stands out only against the black.
        """
        settings = self._policy.settings
        views = {}
        for index in changed:
            earlier = before.get(index)
            view = _View.of(frames, index, ds, settings.detector, earlier.span if earlier else None)
            views[index] = view if earlier is None else view.without_new_strokes(earlier.strokes)
        whole_count = settings.verify.full_frames if decision.action in settings.verify.full_frame_actions else 0
        regions = reader.read(views)
        masks = [(index, rect) for index, frame_regions in regions.items()  # one frame at a time
                 for rect in self._region_masks(frame_regions, views[index].strokes, matcher.phi_phrases)]
        second_look = [changed[position] for position in _frame_order(len(changed), whole_count)]
        return masks, any(self._still_phi(views[index].gray, matcher) for index in second_look)

    def _still_phi(self, gray: np.ndarray, matcher: PhiMatcher) -> bool:
        """The second look: the masked frame read whole by the other reader; PHI or a label read
        there means the search missed text (the instance fails closed)."""
        for line in self._second_reader.read(gray):
            if self._policy.vocabulary.labelled(line.text) or matcher.phi_phrases(_line_words(line)):
                return True
        return False

    @staticmethod
    def _reason(rule_names: list[str], decision: Decision, found: _Found) -> str:
        parts = [f"region rule {name}" for name in rule_names[:1]]
        if found.hits[_Hit.OUTSIDE]:
            parts.append("text outside image")
        if found.hits[_Hit.UNREADABLE]:
            parts.append("unreadable text")
        if found.hits[_Hit.READ]:
            parts.append("ocr text" if decision.mask is MaskScope.ALL_TEXT else "ocr phi")
        if found.hits[_Hit.VERIFIED]:
            parts.append("phi read on verification")
        if not parts:
            parts.append("no phi" if found.candidates else "no text")
        return ", ".join(parts)


def _by_reading(words: list[Word]) -> dict[object, list[list[Word]]]:
    """Lines of words, per rendering they were read in: each rendering is one reading of the text."""
    readings: dict[object, list[list[Word]]] = {}
    for line in text_lines(words):
        readings.setdefault(line[0].reading, []).append(line)
    return readings


def _boxes_over_text(region_boxes: list[Box], views: dict[int, "_View"], rows: int, cols: int) -> set[Rect]:
    """The region rules' boxes where the pixels hold text: a rule's premise is text at that place
    (a vendor's banner); where the detector finds none on any frame (the rule's text lives in an
    overlay plane, or this device did not print it), the pixels are left as they are."""
    boxes = {Rect(*b).grown(0, rows, cols) for b in region_boxes} - {Rect(0, 0, 0, 0)}
    return {b for b in boxes if b.w and b.h and any(b.overlaps(c) for v in views.values() for c in v.candidates)}
