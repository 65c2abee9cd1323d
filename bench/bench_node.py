"""End-to-end throughput of deid-node against the raw DICOM transfer and the peers (issue 7).

For one corpus, in the same run and alternating, so that load on a shared machine falls on all:
  wire            storescu -> sink                      (the ceiling)
  node            storescu -> node -> sink              (until the sink holds the last instance)
  dicognito       dicognito in-process on the same files (read, anonymize, encode)
  orthanc         storescu -> Orthanc                   (with --orthanc)
  node_orthanc    storescu -> node -> Orthanc           (with --orthanc)
  transport_only  storescu -> node with de-identification replaced by a copy -> sink (and -> Orthanc
                  with --orthanc): the most any de-identification could reach (--transport-ceiling)
Then, optionally, the node with other worker counts (--workers 1 2 4) and one large multi-frame
instance (--large-mb 500). Stage timings come from the node's own log and audit trail; memory
is the peak RSS (VmHWM) of the node's processes.

    .venv/bin/python bench/bench_node.py --corpus ct [--instances 50] [--runs 3] [--orthanc]

Prints figures and writes them to bench/results/node-<corpus>.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pydicom
import yaml
from dicognito.anonymizer import Anonymizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpora import CORPORA, DEFAULT_INSTANCES, large_multiframe  # noqa: E402
from bench.sink import Sink  # noqa: E402
from node.config import WorkerSettings  # noqa: E402
from tests.nodeproc import NodeProcess, write_config  # noqa: E402
from tests.servers import Orthanc, free_port, storescu  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SINK_AE = "SINK"
NODE = ("-m", "node")
TRANSPORT_ONLY = (str(ROOT / "bench" / "transport_only.py"),)  # the node, de-identification a copy


@dataclass(frozen=True)
class Measured:
    seconds: float
    instances: int
    megabytes: float

    def figures(self) -> dict[str, float]:
        return {"seconds": round(self.seconds, 3), "instances_per_s": round(self.instances / self.seconds, 2),
                "mb_per_s": round(self.megabytes / self.seconds, 2)}


def _wait(count: Callable[[], int], wanted: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while count() < wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count()} of {wanted} after {timeout} s")
        time.sleep(0.02)


def _send(files: Sequence[Path], port: int, called_ae: str, count: Callable[[], int], timeout: float) -> float:
    """Seconds from the first byte sent until the destination counts the last instance."""
    started = time.perf_counter()
    storescu(files, port, called_ae=called_ae, timeout=timeout)
    _wait(count, len(files), timeout)
    return time.perf_counter() - started


def wire(files: Sequence[Path], scratch: Path, timeout: float) -> tuple[float, float]:
    """Seconds, and the sink's CPU milliseconds per instance (it runs in this process)."""
    port = free_port()
    with Sink(port, scratch / "wire") as sink:
        started = time.process_time()
        seconds = _send(files, port, SINK_AE, lambda: sink.count, timeout)
        return seconds, (time.process_time() - started) * 1000 / len(files)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of `pid` and of its children (the workers and the forwarder), in MB: an upper bound,
    since pages the processes share are counted in each."""
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]
    total = 0
    for each in pids:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return total / 1024


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


@dataclass(frozen=True)
class NodeRun:
    seconds: float
    peak_rss_mb: float
    directory: Path
    cpu_ms_per_instance: dict[str, float]  # CPU time of each node role (and the sink) per instance


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _roles(node: NodeProcess) -> dict[int, str]:
    """Which process does what: the serve process receives; its children say in their first log line."""
    assert node.process is not None
    roles = {node.process.pid: "receive"}
    for line in node.log().splitlines():
        for event, role in (('"worker_started"', "deidentify"), ('"forwarder_started"', "forward")):
            if event in line:
                roles[int(json.loads(line)["owner"].rsplit(":", 1)[1])] = role
    return roles


def _cpu_by_role(roles: dict[int, str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid, role in roles.items():
        totals[role] = totals.get(role, 0.0) + _cpu_seconds(pid)
    return totals


def through_node(files: Sequence[Path], scratch: Path, dest_port: int, dest_aet: str, count: Callable[[], int],
                 timeout: float, workers: int, program: Sequence[str] = NODE) -> NodeRun:
    """storescu -> a freshly started node (own database and spool) -> the destination."""
    directory = Path(tempfile.mkdtemp(prefix="node-", dir=scratch))
    port = free_port()
    config = write_config(directory, port=port, dest_port=dest_port, dest_aet=dest_aet, workers=workers)
    _shipped_lease(config)
    with NodeProcess(config, port, program=program) as node:
        _wait(lambda: _started_children(node), workers + 1, timeout)  # spawned workers import for seconds
        roles = _roles(node)
        before, destination_before = _cpu_by_role(roles), time.process_time()
        seconds = _send(files, port, "DEID_NODE", count, timeout)
        after = _cpu_by_role(roles)
        # The sink runs in this process, which only waits meanwhile: its CPU is the destination's.
        after["destination (sink, when used)"] = time.process_time() - destination_before
        assert node.process is not None
        rss = _peak_rss_mb(node.process.pid)
    cpu = {role: round((after[role] - before.get(role, 0.0)) * 1000 / len(files), 2) for role in after}
    return NodeRun(seconds, rss, directory, cpu)


def _shipped_lease(config: Path) -> None:
    """The shipped lease (node/config.py), not the tests' short one: a large instance that takes
    longer than the lease would be claimed and de-identified a second time."""
    settings = yaml.safe_load(config.read_text())
    settings["workers"]["lease_seconds"] = WorkerSettings.model_fields["lease_seconds"].default
    config.write_text(yaml.safe_dump(settings))


def _started_children(node: NodeProcess) -> int:
    return sum(f'"{name}"' in line for line in node.log().splitlines()
               for name in ("worker_started", "forwarder_started"))


def node_to_sink(files: Sequence[Path], scratch: Path, timeout: float, workers: int,
                 program: Sequence[str] = NODE) -> NodeRun:
    port = free_port()
    with Sink(port, Path(tempfile.mkdtemp(prefix="sink-", dir=scratch))) as sink:
        return through_node(files, scratch, port, SINK_AE, lambda: sink.count, timeout, workers, program)


def orthanc_direct(files: Sequence[Path], timeout: float) -> float:
    with Orthanc() as orthanc:
        return _send(files, orthanc.dicom_port, orthanc.aet, orthanc.count, timeout)


def node_to_orthanc(files: Sequence[Path], scratch: Path, timeout: float, workers: int,
                    program: Sequence[str] = NODE) -> NodeRun:
    with Orthanc() as orthanc:
        return through_node(files, scratch, orthanc.dicom_port, orthanc.aet, orthanc.count, timeout, workers, program)


def dicognito(files: Sequence[Path]) -> float:
    """The peer on the same work the node does per instance: read the file, de-identify, encode."""
    anonymizer = Anonymizer()
    started = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(io.BytesIO(), enforce_file_format=True)
    return time.perf_counter() - started


def _log_events(directory: Path) -> list[dict]:
    events = []
    for line in (directory / "node.log").read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _audit_times(directory: Path) -> dict[int, dict[str, datetime]]:
    with sqlite3.connect(directory / "node.db") as db:
        rows = db.execute("SELECT job_id, event, at FROM audit_events").fetchall()
    times: dict[int, dict[str, datetime]] = {}
    for job, event, at in rows:
        times.setdefault(job, {})[event] = datetime.fromisoformat(at)
    return times


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(values), "median_ms": round(statistics.median(values) * 1000, 2),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
            "total_s": round(sum(values), 3)}


def stage_timings(directory: Path) -> dict[str, object]:
    """Per-instance seconds of each stage, from the node's log (receive, pixel, de-identify,
    forward) and its audit trail (the waits between them); the stage with the most time is named."""
    events = _log_events(directory)
    by_name: dict[str, list[dict]] = {}
    for event in events:
        by_name.setdefault(event.get("event", ""), []).append(event)
    deid = {e["job"]: e["seconds"] for e in by_name.get("deidentified", [])}
    batches = by_name.get("forward_batch", [])
    audit = _audit_times(directory)
    queue_wait, forward_wait = [], []
    for job, times in audit.items():
        if {"received", "deidentified"} <= times.keys() and job in deid:
            queue_wait.append(max(0.0, (times["deidentified"] - times["received"]).total_seconds() - deid[job]))
        if {"deidentified", "forwarded"} <= times.keys():
            forward_wait.append((times["forwarded"] - times["deidentified"]).total_seconds())
    pixel = [e["seconds"] for e in by_name.get("pixels.done", [])]
    stages = {
        "receive": _spread([e["seconds"] for e in by_name.get("received", []) if "seconds" in e]),
        "queue_wait": _spread(queue_wait),
        "pixel": _spread(pixel),
        "deidentify": _spread(list(deid.values())),
        # read, metadata step and encoding: the pipeline's time outside the pixel step
        "deidentify_without_pixel": {"total_s": round(_total(by_name, "deidentified", "run_seconds") - sum(pixel), 3)},
        "deid_mappings_commit": _spread(_field(by_name, "deidentified", "mappings_seconds")),
        "deid_store_and_settle": _spread(_field(by_name, "deidentified", "store_seconds")),
        "forward": _spread(_per_instance(batches, "send_seconds")),
        "forward_settle": _spread(_per_instance(batches, "settle_seconds")),
        "clean_to_forwarded": _spread(forward_wait),
    }
    working = ("receive", "pixel", "deidentify_without_pixel", "deid_mappings_commit", "deid_store_and_settle",
               "forward", "forward_settle")
    slowest = max(working, key=lambda s: stages[s].get("total_s", 0.0))  # type: ignore[arg-type, return-value]
    ocr = [e.get("ocr_frames", 0) for e in by_name.get("pixels.done", [])]
    frames = [e.get("frames", 0) for e in by_name.get("pixels.done", [])]
    return {"stages": stages, "slowest_working_stage": slowest, "forward_retries": len(by_name.get("forward_retry", [])),
            "ocr_frames": sum(ocr), "frames_scanned": sum(frames),
            "pixel_seconds_per_frame": round(sum(pixel) / max(1, sum(frames)), 4),
            "pixel_seconds_per_ocr_frame": round(sum(pixel) / sum(ocr), 3) if sum(ocr) else None,
            "pixel_reasons": dict(Counter(e.get("reason", "?") for e in by_name.get("pixels.done", [])))}


def _field(by_name: dict[str, list[dict]], event: str, field: str) -> list[float]:
    return [e[field] for e in by_name.get(event, []) if field in e]


def _total(by_name: dict[str, list[dict]], event: str, field: str) -> float:
    return sum(_field(by_name, event, field))


def _per_instance(batches: list[dict], field: str) -> list[float]:
    """A batch's seconds shared out over its instances."""
    return [b[field] / b["count"] for b in batches for _ in range(b["count"])]


def _median(runs: list[float], n: int, mb: float) -> dict[str, object]:
    figures = Measured(statistics.median(runs), n, mb).figures()
    return figures | {"runs_s": [round(r, 3) for r in runs]}


def _ratio(a: dict, b: dict) -> float:
    return round(float(a["instances_per_s"]) / float(b["instances_per_s"]), 3)


def compare(files: Sequence[Path], scratch: Path, args: argparse.Namespace) -> dict[str, object]:
    """Every contender `args.runs` times, alternating; medians and the issue's ratios."""
    n, mb = len(files), sum(p.stat().st_size for p in files) / 1e6
    runs: dict[str, list[float]] = {"wire": [], "node": [], "dicognito": []}
    node_runs: list[NodeRun] = []
    transport_runs: list[NodeRun] = []
    wire_sink_cpu: list[float] = []
    if args.orthanc:
        runs |= {"orthanc": [], "node_orthanc": []}
    if args.transport_ceiling:
        runs |= {"transport_only": []} | ({"transport_only_orthanc": []} if args.orthanc else {})
    for number in range(args.runs):
        seconds, sink_cpu = wire(files, scratch, args.timeout)
        runs["wire"].append(seconds)
        wire_sink_cpu.append(sink_cpu)
        node_runs.append(node_to_sink(files, scratch, args.timeout, args.workers[0]))
        runs["node"].append(node_runs[-1].seconds)
        runs["dicognito"].append(dicognito(files))
        if args.orthanc:
            runs["orthanc"].append(orthanc_direct(files, args.timeout))
            runs["node_orthanc"].append(node_to_orthanc(files, scratch, args.timeout, args.workers[0]).seconds)
        if args.transport_ceiling:
            transport_runs.append(node_to_sink(files, scratch, args.timeout, args.workers[0], TRANSPORT_ONLY))
            runs["transport_only"].append(transport_runs[-1].seconds)
            if args.orthanc:
                runs["transport_only_orthanc"].append(
                    node_to_orthanc(files, scratch, args.timeout, args.workers[0], TRANSPORT_ONLY).seconds)
        print(f"run {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()), flush=True)
    medians = {name: _median(values, n, mb) for name, values in runs.items()}
    # Where the CPU goes (2 cores shared by everything): per instance, median run.
    cpu: dict[str, object] = {"wire_sink": round(statistics.median(wire_sink_cpu), 2),
                              "node": _median_run(node_runs).cpu_ms_per_instance}
    result: dict[str, object] = {
        **medians,
        "node_vs_wire": _ratio(medians["node"], medians["wire"]),
        "node_vs_peer": _ratio(medians["node"], medians["dicognito"]),
        "node_peak_rss_mb": round(max(r.peak_rss_mb for r in node_runs), 1),
        "node_stage_timings": stage_timings(_median_run(node_runs).directory),
        "cpu_ms_per_instance": cpu,
    }
    if args.orthanc:
        result["node_orthanc_vs_direct_orthanc"] = _ratio(medians["node_orthanc"], medians["orthanc"])
    if args.transport_ceiling:
        # The ceiling: the node's own transport with de-identification free, and what
        # de-identification costs against it.
        result["transport_only_vs_wire"] = _ratio(medians["transport_only"], medians["wire"])
        result["node_vs_transport_only"] = _ratio(medians["node"], medians["transport_only"])
        cpu["transport_only"] = _median_run(transport_runs).cpu_ms_per_instance
        if args.orthanc:
            result["transport_only_orthanc_vs_direct_orthanc"] = _ratio(medians["transport_only_orthanc"],
                                                                        medians["orthanc"])
    return result


def _median_run(node_runs: Sequence[NodeRun]) -> NodeRun:
    return sorted(node_runs, key=lambda r: r.seconds)[len(node_runs) // 2]


def scaling(files: Sequence[Path], scratch: Path, args: argparse.Namespace) -> dict[str, object]:
    """Node -> sink throughput and peak RSS per deid worker count (median of `args.runs`)."""
    n, mb = len(files), sum(p.stat().st_size for p in files) / 1e6
    found: dict[str, object] = {}
    for workers in args.workers:
        node_runs = [node_to_sink(files, scratch, args.timeout, workers) for _ in range(args.runs)]
        found[str(workers)] = _median([r.seconds for r in node_runs], n, mb) | {
            "peak_rss_mb": round(max(r.peak_rss_mb for r in node_runs), 1)}
        print(f"workers {workers}: {found[str(workers)]}", flush=True)
    return found


def memory(files: Sequence[Path], scratch: Path, args: argparse.Namespace) -> dict[str, object]:
    """Peak RSS for a tenth of the study and for all of it (it must not grow with the study), and
    for one large multi-frame instance."""
    tenth = files[: max(1, len(files) // 10)]
    found: dict[str, object] = {}
    for label, subset in (("study_tenth", tenth), ("study", files)):
        run = node_to_sink(subset, scratch, args.timeout, args.workers[0])
        found[label] = {"instances": len(subset), "peak_rss_mb": round(run.peak_rss_mb, 1)}
    if args.large_mb:
        large = large_multiframe(scratch / "large", args.large_mb)
        run = node_to_sink([large], scratch, args.timeout, args.workers[0])
        found["large_instance"] = {"megabytes": round(large.stat().st_size / 1e6, 1), "seconds": round(run.seconds, 2),
                                   "peak_rss_mb": round(run.peak_rss_mb, 1),
                                   "stage_timings": stage_timings(run.directory)["stages"]}
    print(f"memory: {found}", flush=True)
    return found


def _quiet() -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ct")
    parser.add_argument("--instances", type=int, help=f"default: {DEFAULT_INSTANCES}")
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs")
    parser.add_argument("--orthanc", action="store_true", help="also storescu -> Orthanc and node -> Orthanc")
    parser.add_argument("--transport-ceiling", action="store_true",
                        help="also the node with de-identification replaced by a copy (bench/transport_only.py)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="deid workers; the first is used for the comparison, several give a scaling table")
    parser.add_argument("--memory", action="store_true", help="peak RSS for 1/10 of the study and the whole")
    parser.add_argument("--large-mb", type=int, default=0, help="with --memory: one multi-frame instance this big")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/node-<corpus>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _quiet()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as temporary:
        scratch = Path(temporary)
        files = CORPORA[args.corpus](scratch / "corpus", args.instances or DEFAULT_INSTANCES[args.corpus])
        result: dict[str, object] = {"corpus": args.corpus, "instances": len(files),
                                     "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
                                     "runs": args.runs, "workers": args.workers[0],
                                     "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
        result["comparison"] = compare(files, scratch, args)
        if len(args.workers) > 1:
            result["scaling"] = scaling(files, scratch, args)
        if args.memory:
            result["memory"] = memory(files, scratch, args)
    out = args.out or RESULTS / f"node-{args.corpus}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
