"""Held-out probes: the node measured on data it was not tuned on, and the scorer shown able to fail.

`test_the_node_meets_the_bars_on_held_out_data` holds the bars of issue 14; it is a strict xfail
while they are not met (a pass fails the suite, so the marker goes the day they are). Meanwhile
`test_held_out_privacy_and_clinical_text_do_not_fall` holds today's level on the same batch as a
floor. Run both alone with `pytest -m heldout tests/heldout`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.heldout import burn
from tests.heldout.burn import mask_from_json
from tests.heldout.generate import SEEDS, Truth, generate_corpus, read_corpus
from tests.heldout.report import table
from tests.heldout.score import BARS, Result, run_function, run_node, score

SUITE_SEED = SEEDS["report"][0]
SUITE_STUDIES = 3
SELF_TEST_SEED = SEEDS["tune"][0]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Truth]]:
    """A small TUNE-seed corpus for the scorer's self-tests (no node involved)."""
    corpus = tmp_path_factory.mktemp("heldout-self") / "corpus"
    return corpus, generate_corpus(corpus, SELF_TEST_SEED, studies=4)


@dataclass(frozen=True)
class Floors:
    """What the node reaches today on the suite's REPORT-seed batch, a little below: a change that
    loses privacy or clinical text on data nobody tuned on fails here, long before the bars are met.
    Raise these when the node improves (measured figures in tests/heldout/README.md)."""

    midi_b: float = 0.960
    hidden: float = 0.30
    kept: float = 0.84
    unchanged: float = 1.0


FLOORS = Floors()


@pytest.fixture(scope="module")
def suite_result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The node (shipped TCIA profile and pixel policy) on one small REPORT-seed batch, scored once."""
    tmp = tmp_path_factory.mktemp("heldout-suite")
    corpus = tmp / "corpus"
    truths = generate_corpus(corpus, SUITE_SEED, studies=SUITE_STUDIES)
    result = score(corpus, truths, run_node(corpus, truths, tmp / "node"))
    assert result.phi_images and result.clean_images and result.totals["text_retained"]
    return result


@pytest.mark.heldout
def test_held_out_privacy_and_clinical_text_do_not_fall(suite_result: Result) -> None:
    shortfalls = [f"{name} {getattr(suite_result, name):.2%} < floor {floor:.2%}"
                  for name, floor in vars(FLOORS).items() if getattr(suite_result, name) < floor]
    assert not shortfalls, "\n" + "\n".join(shortfalls) + "\n" + table("report", (SUITE_SEED,), suite_result, 0)


@pytest.mark.heldout
@pytest.mark.xfail(strict=True, reason="issue 14 open: the bars are not met on held-out data yet "
                                       "(tests/heldout/README.md has the figures); strict: passing fails, "
                                       "so the marker goes the day they are met")
def test_the_node_meets_the_bars_on_held_out_data(suite_result: Result) -> None:
    assert not BARS.shortfalls(suite_result), "\n" + table("report", (SUITE_SEED,), suite_result, 0)


def test_the_corpus_has_what_the_probes_need(small: tuple[Path, list[Truth]]) -> None:
    corpus, truths = small
    images = [t for t in truths if t.modality != "SR"]
    assert len({t.modality for t in images}) == 4  # one study per modality until all seven are used
    assert any(t.burned_in for t in images) and any(t.text_in_pixels == "none" for t in images)
    assert all(item["pixels"] > 0 for t in images for item in t.burned_in)
    actions = {c.action for t in truths for c in t.checks}
    assert actions == {"text_removed", "text_retained", "tag_retained", "date_shifted", "uid_changed",
                       "uid_consistent", "patid_consistent"}
    assert read_corpus(corpus) == truths


def test_the_same_seed_writes_the_same_corpus(tmp_path: Path, small: tuple[Path, list[Truth]]) -> None:
    corpus, truths = small
    again = generate_corpus(tmp_path, SELF_TEST_SEED, studies=4)
    assert again == truths
    assert all((tmp_path / t.file).read_bytes() == (corpus / t.file).read_bytes() for t in truths)


def test_an_identity_deidentifier_hides_nothing(small: tuple[Path, list[Truth]]) -> None:
    corpus, truths = small
    result = score(corpus, truths, run_function(corpus, truths, lambda ds: None))
    assert result.per_action["text_removed"] == 0 and result.totals["text_removed"] > 50
    assert result.per_action["uid_changed"] == 0 and result.per_action["date_shifted"] == 0
    assert result.hidden == 0.0 and result.per_action["pixels_hidden"] == 0
    assert result.kept == 1.0 and result.unchanged == 1.0
    assert BARS.shortfalls(result)


def _blank(ds: Dataset) -> None:
    """Empties every text element and blacks out every pixel: hides all, keeps nothing."""
    def empty(dataset: Dataset, element: pydicom.DataElement) -> None:
        if element.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "CS", "DA", "AS", "DS", "IS") and element.tag.group not in (0x0002, 0x0028):
            element.value = ""
    ds.walk(empty)
    if "PixelData" in ds:
        ds.PixelData = bytes(len(ds.PixelData))


def test_blanking_everything_hides_every_item_and_fails_what_must_be_kept(small: tuple[Path, list[Truth]]) -> None:
    corpus, truths = small
    result = score(corpus, truths, run_function(corpus, truths, _blank))
    assert result.per_action["text_removed"] == result.totals["text_removed"]
    assert result.hidden == 1.0
    assert result.kept == 0.0 and result.unchanged == 0.0
    image_module = sum(1 for t in truths for c in t.checks if c.action == "tag_retained" and c.path.startswith("0028"))
    assert result.per_action["tag_retained"] == image_module < result.totals["tag_retained"]  # only what _blank spares


def _paint_first_item(truth: Truth, share: float) -> Callable[[Dataset], None]:
    """A de-identifier that changes `share` of the stroke pixels of the instance's first PHI item only."""
    def paint(ds: Dataset) -> None:
        item = truth.burned_in[0]
        (top, left, height, width), mask = mask_from_json(item)
        pixels = ds.pixel_array.copy()
        frames = pixels if pixels.ndim == (4 if ds.SamplesPerPixel == 3 else 3) else pixels[None]
        rows, cols = np.nonzero(mask)
        count = int(np.ceil(len(rows) * share))
        window = frames[item["frame"], top:top + height, left:left + width]
        window[rows[:count], cols[:count]] = window[rows[:count], cols[:count]] ^ 1  # flip the lowest bit
        ds.PixelData = frames.tobytes()
    return paint


@pytest.mark.parametrize(("share", "hidden"), [(1.0, True), (0.985, False)])
def test_an_item_counts_as_hidden_only_when_99_percent_of_its_strokes_changed(
    small: tuple[Path, list[Truth]], share: float, hidden: bool,
) -> None:
    corpus, truths = small
    one = next(t for t in truths if len(t.burned_in) > 1)
    result = score(corpus, [one], run_function(corpus, [one], _paint_first_item(one, share)))
    assert result.per_action["pixels_hidden"] == (1 if hidden else 0)
    assert result.hidden == 0.0  # the instance's other items are still there


@pytest.mark.parametrize(("font", "size", "flags"), [
    (0, 14, {"anti_aliased": True}),
    (-1, 12, {"anti_aliased": False, "outline": True}),
    (0, 13, {"anti_aliased": True, "vertical": True}),
])
def test_an_items_mask_is_exactly_the_pixels_its_strokes_changed(font: int, size: int, flags: dict[str, bool]) -> None:
    style = burn.Style(burn.fonts()[font], size, **flags)
    frame = np.full((160, 160), 100, dtype=np.uint16)
    canvas = burn.Canvas(frame)
    segments = [burn.Segment("Ref:", None), burn.Segment("Dr Quaresma-Ödegård", "referrer")]
    burn.draw_line(canvas, segments, style, 4, 4, "test", 3900, 500)
    (item,) = canvas.items
    mask = np.zeros(frame.shape, dtype=bool)
    mask[item.top:item.top + item.mask.shape[0], item.left:item.left + item.mask.shape[1]] = item.mask
    changed = frame != 100
    assert mask.sum() > 50 and (changed & mask).sum() == mask.sum()  # every mask pixel was changed
    label = changed & ~mask  # what else changed is the label's strokes, drawn before the value
    assert label.any() and not (label & mask).any()
    along = 0 if style.vertical else 1
    assert np.nonzero(label)[along].max() < np.nonzero(mask)[along].min()
