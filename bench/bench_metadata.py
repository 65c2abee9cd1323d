"""Throughput of the metadata de-identification step alone, next to dicognito on the same files.

Both read each instance from the same in-memory bytes (parsing is part of the work either way),
de-identify it, and nothing is written. Prints instances per second for each and the ratio.

Usage: .venv/bin/python bench/bench_metadata.py [--profile config/profiles/tcia.yaml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import pydicom
import structlog
from dicognito.anonymizer import Anonymizer
from pydicom.data import get_testdata_files

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.deid.metadata import MetadataDeidentifier  # noqa: E402
from node.deid.phi import collect_header_phi  # noqa: E402
from node.deid.profile import load_profile  # noqa: E402
from node.deid.pseudonyms import DerivedMappings, KeyedDerivation  # noqa: E402

MAX_BYTES = 2 * 1024 * 1024


def mixed_corpus() -> list[bytes]:
    """Every pydicom / pydicom-data test file up to 2 MiB that is a readable composite instance."""
    corpus = []
    for name in sorted(get_testdata_files("*")):
        path = Path(name)
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - deliberately broken test files are skipped
            continue
        if "SOPInstanceUID" in ds and "PatientID" in ds:
            corpus.append(data)
    return corpus


def seconds(corpus: list[bytes], deidentify: Callable[[pydicom.Dataset], object]) -> float:
    started = time.perf_counter()
    for data in corpus:
        deidentify(pydicom.dcmread(io.BytesIO(data)))
    return time.perf_counter() - started


def rates(corpus: list[bytes], contenders: dict[str, Callable[[pydicom.Dataset], object]], rounds: int) -> dict[str, float]:
    """Instances per second, best round of each; rounds alternate so that load on a shared
    machine falls on every contender alike."""
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, deidentify in contenders.items():
            best[name] = min(best[name], seconds(corpus, deidentify))
    return {name: len(corpus) / value for name, value in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default=str(ROOT / "config" / "profiles" / "tcia.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    corpus = mixed_corpus()
    deidentifier = MetadataDeidentifier(load_profile(Path(args.profile)))
    mappings = DerivedMappings(KeyedDerivation(secret=b"bench-secret"))
    anonymizer = Anonymizer()

    def ours(ds: pydicom.Dataset) -> object:
        return deidentifier.apply(ds, mappings, collect_header_phi(ds))

    found = rates(corpus, {"parse": lambda ds: None, "node": ours, "dicognito": anonymizer.anonymize}, args.rounds)
    parse_only, node, dicognito = found["parse"], found["node"], found["dicognito"]
    print(f"corpus: {len(corpus)} instances (pydicom + pydicom-data test files <= 2 MiB), profile {Path(args.profile).name}, best of {args.rounds}")
    print(f"parse only : {parse_only:8.1f} instances/s")
    print(f"deid-node  : {node:8.1f} instances/s (parse + metadata step)")
    print(f"dicognito  : {dicognito:8.1f} instances/s (parse + anonymize)")
    print(f"ratio      : {node / dicognito:8.2f}x")
    alone = 1 / (1 / node - 1 / parse_only)
    peer_alone = 1 / (1 / dicognito - 1 / parse_only)
    print(f"step alone : {alone:8.1f} vs {peer_alone:.1f} instances/s (parse time subtracted), ratio {alone / peer_alone:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
