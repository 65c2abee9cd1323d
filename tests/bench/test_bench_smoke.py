"""The end-to-end benchmark keeps working: a tiny run writes every figure the issue asks for.

Only the presence and consistency of the figures is checked, never their size: timings on a
shared machine prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from bench import bench_node
from bench.corpora import CT_SIDE, ct, ultrasound
from tests.servers import unavailable

pytestmark = pytest.mark.skipif(bool(unavailable("dcmtk")), reason=str(unavailable("dcmtk")))


def test_ct_corpus_is_one_series_of_512_slices_with_distinct_instances(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(path) for path in ct(tmp_path, 3)]

    assert {(ds.Rows, ds.Columns) for ds in datasets} == {(CT_SIDE, CT_SIDE)}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)


def test_ultrasound_corpus_renews_uids_of_recycled_files(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(path) for path in ultrasound(tmp_path, 6)]

    assert {ds.Modality for ds in datasets} == {"US"}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6


def test_node_benchmark_writes_ratios_and_stage_timings(tmp_path: Path) -> None:
    out = tmp_path / "node.json"

    assert bench_node.main(["--corpus", "ct", "--instances", "3", "--runs", "1", "--workers", "1",
                            "--transport-ceiling", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    comparison = result["comparison"]
    assert result["instances"] == 3
    for contender in ("wire", "node", "dicognito", "transport_only"):
        assert comparison[contender]["instances_per_s"] > 0
    assert comparison["node_vs_wire"] == pytest.approx(
        comparison["node"]["instances_per_s"] / comparison["wire"]["instances_per_s"], rel=0.01, abs=0.0005)
    assert comparison["transport_only_vs_wire"] == pytest.approx(
        comparison["transport_only"]["instances_per_s"] / comparison["wire"]["instances_per_s"], rel=0.01, abs=0.0005)
    assert set(comparison["cpu_ms_per_instance"]["transport_only"]) >= {"receive", "deidentify", "forward"}
    stages = comparison["node_stage_timings"]["stages"]
    assert {stages[s]["count"] for s in ("receive", "pixel", "deidentify", "forward")} == {3}
    assert comparison["node_stage_timings"]["slowest_working_stage"] in stages
    assert comparison["node_peak_rss_mb"] > 0
