"""Speed of the pixel step (issue 4): per frame and per instance, next to Presidio, and the detector alone.

Run: .venv/bin/python bench/bench_pixels.py [--slices 1000] [--repeat 3] [--before OLD.json]
Prints a table and writes bench/results/pixels.json. Not part of the test suite. With --before
(a results file of an earlier run, e.g. copied before a change), each row shows that run's
seconds next to this one's.
On a shared machine compare ratios from one run; --repeat takes each side's median of N runs.

* Real images with burned-in text (pydicom-data / pydicom test files) and synthetic ones with
  PHI drawn in (tests/deid/pixels/synthetic.py), through PixelCleaner with the shipped policy.
* Presidio's DicomImageRedactorEngine (offline: NoOpNlpEngine, the instance's own header as deny
  list via use_metadata) on the same single-frame images, in the same run.
* The text detector alone on generated 512x512 CT slices without text.
* Both sides are warmed up on a small image first (imports, pattern compilation), and "calls" counts
  our tesseract calls per instance (each costs ~0.15 s before it reads a word).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytesseract
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.deid.phi import collect_header_phi  # noqa: E402
from node.deid.pixels import PixelCleaner, PixelCleaningError  # noqa: E402
from node.deid.pixels.codec import display  # noqa: E402
from node.deid.pixels.detect import find_text  # noqa: E402
from node.deid.pixels.policy import load_policy  # noqa: E402
from tests.deid.pixels.synthetic import Font, Kind, image_dataset, phantom, text_mask  # noqa: E402

POLICY = ROOT / "config" / "pixel-policy.yaml"
REAL = ["US1_UNCR.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm", "examples_palette.dcm", "OBXXXX1A_2frame.dcm",
        "color3d_jpeg_baseline.dcm", "CT_small.dcm", "MR_small.dcm"]


def _synthetic() -> dict[str, pydicom.Dataset]:
    mask = text_mask(512, 512, Font("DejaVuSans.ttf", 10))
    return {
        "synthetic CT 512 text": image_dataset(Kind("MONOCHROME2", 12, signed=True), "CT", mask),
        "synthetic MR 256 6px": image_dataset(Kind("MONOCHROME2", 12), "MR", text_mask(256, 256, Font("DejaVuSans.ttf", 6))),
        "synthetic CT 512 no text": image_dataset(Kind("MONOCHROME2", 12, signed=True), "CT", np.zeros((512, 512), bool)),
    }


def _images() -> dict[str, pydicom.Dataset]:
    images = {name: pydicom.dcmread(get_testdata_file(name)) for name in REAL if get_testdata_file(name)}
    return images | _synthetic()


_CALLS: list[float] = []


def _count_tesseract_calls() -> None:
    """Every tesseract call goes through pytesseract.image_to_data: count them (and their time)."""
    call = pytesseract.image_to_data

    def counted(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            _CALLS.append(time.perf_counter() - started)

    pytesseract.image_to_data = counted


def _time_ours(cleaner: PixelCleaner, ds: pydicom.Dataset) -> dict[str, object]:
    work = copy.deepcopy(ds)  # a shallow copy shares PixelData's element: masking would reach `ds`
    _CALLS.clear()
    started = time.perf_counter()
    try:
        outcome = cleaner.clean(work, collect_header_phi(work))
        result = {"redacted": outcome.redacted, "boxes": outcome.boxes, "ocr_frames": outcome.ocr_frames,
                  "reason": outcome.reason}
    except PixelCleaningError as exc:
        result = {"quarantined": str(exc)}
    seconds = time.perf_counter() - started
    frames = int(str(ds.get("NumberOfFrames", 1) or 1))
    return {"frames": frames, "seconds": seconds, "seconds_per_frame": seconds / frames,
            "tesseract_calls": len(_CALLS), "tesseract_seconds": sum(_CALLS), **result}


def _median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run with the median time (its other figures come with it), and every run's seconds."""
    ordered = sorted(runs, key=lambda r: float(r["seconds"]))  # type: ignore[arg-type]
    return {**ordered[len(ordered) // 2], "runs_seconds": [r["seconds"] for r in runs]}


def _presidio() -> object:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

    analyzer = AnalyzerEngine(nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}]),
                              supported_languages=["en"])
    return DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))


def _time_presidio(engine: object, ds: pydicom.Dataset) -> dict[str, object]:
    work = copy.deepcopy(ds)  # a shallow copy shares PixelData's element: the redaction would reach `ds`
    started = time.perf_counter()
    try:
        engine.redact(work, fill="contrast", use_metadata=True)  # type: ignore[attr-defined]
        status = "ok"
    except Exception as exc:  # Presidio fails on some inputs (multi-frame, 16-bit colour): record it
        status = f"failed: {type(exc).__name__}"
    return {"seconds": time.perf_counter() - started, "status": status}


def _detector(slices: int) -> dict[str, float]:
    settings = load_policy(POLICY).settings.detector
    ds = image_dataset(Kind("MONOCHROME2", 12, signed=True), "CT", np.zeros((512, 512), bool))
    low, high = -1024, 3071
    frames = [np.rint(phantom(512, 512, low, high, seed)).astype(np.int16) for seed in range(min(slices, 50))]
    found = 0
    started = time.perf_counter()
    for index in range(slices):
        gray, _, _ = display(frames[index % len(frames)], "MONOCHROME2", ds, None)
        found += len(find_text(gray, settings, highlight=True)[1])
    seconds = time.perf_counter() - started
    return {"slices": slices, "ms_per_slice": 1000 * seconds / slices, "candidates": found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000, help="generated CT slices for the detector timing")
    parser.add_argument("--repeat", type=int, default=1, help="runs per image and side; the median is shown")
    parser.add_argument("--skip-presidio", action="store_true")
    parser.add_argument("--before", type=Path, help="an earlier bench/results/pixels.json to compare with")
    args = parser.parse_args()
    before = json.loads(args.before.read_text()) if args.before else {"images": {}, "detector": {}}
    os.environ["OMP_THREAD_LIMIT"] = "1"
    _count_tesseract_calls()
    cleaner = PixelCleaner.from_policy_file(POLICY)
    presidio = None if args.skip_presidio else _presidio()
    images = _images()
    warm_up = images["synthetic MR 256 6px"]
    _time_ours(cleaner, warm_up)
    if presidio is not None:
        _time_presidio(presidio, warm_up)
    rows = {}
    print(f"{'image':32} {'frames':>6} {'before s':>8} {'ours s':>8} {'s/frame':>8} {'calls':>5} {'presidio s':>10} "
          f"{'ratio':>6}  outcome")
    for name, ds in images.items():
        single = int(str(ds.get("NumberOfFrames", 1) or 1)) == 1
        ours_runs, theirs_runs = [], []
        for _ in range(max(1, args.repeat)):
            ours_runs.append(_time_ours(cleaner, ds))
            if presidio is not None and single:
                theirs_runs.append(_time_presidio(presidio, ds))
        ours = _median_run(ours_runs)
        row = {"ours": ours}
        ratio = ""
        if theirs_runs:
            theirs = _median_run(theirs_runs)
            row["presidio"] = theirs
            if theirs["status"] == "ok":
                row["presidio_over_ours"] = float(theirs["seconds"]) / float(ours["seconds"])  # type: ignore[arg-type]
                ratio = f"{row['presidio_over_ours']:.2f}"
            else:
                ratio = "fail"
        rows[name] = row
        presidio_s = f"{row['presidio']['seconds']:.2f}" if "presidio" in row else "-"
        outcome = ours.get("reason") or ours.get("quarantined")
        earlier = before["images"].get(name, {}).get("ours", {}).get("seconds")
        earlier_s = f"{earlier:.2f}" if earlier is not None else "-"
        print(f"{name:32} {ours['frames']:>6} {earlier_s:>8} {ours['seconds']:>8.2f} {ours['seconds_per_frame']:>8.3f} "
              f"{ours['tesseract_calls']:>5} {presidio_s:>10} {ratio:>6}  {outcome}")
    detector = _detector(args.slices)
    earlier_ms = before["detector"].get("ms_per_slice")
    print(f"detector alone: {detector['ms_per_slice']:.2f} ms per 512x512 CT slice without text "
          f"({detector['slices']} slices, {detector['candidates']} candidates)"
          + (f"; before: {earlier_ms:.2f} ms" if earlier_ms is not None else ""))
    results = {"images": rows, "detector": detector, "repeat": args.repeat, "cpu_count": os.cpu_count(),
               "load_average": os.getloadavg()}
    out = ROOT / "bench" / "results" / "pixels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
