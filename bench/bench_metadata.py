"""Throughput of the metadata de-identification step alone, next to dicognito on the same files.

Both read each instance from the same in-memory bytes (parsing is part of the work either way),
de-identify it, and nothing is written. Prints instances per second for each and the ratio.

Then the cost of free-text analysis (the named-entity model in the cleaner and the last look) on
a CT series: the same instances de-identified with and without it, milliseconds per instance
after the first (the model loaded, the series' descriptions in its cache). And how often the last
look quarantines clean data: every instance of the mixed corpus and of the conformance corpus.

Usage: .venv/bin/python bench/bench_metadata.py [--profile config/profiles/tcia.yaml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from node.deid.residual import LastLook, ResidualPhi  # noqa: E402
from node.deid.text import LastLookSettings  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

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


def ct_series(count: int) -> list[bytes]:
    """`count` slices of one CT series: CT_small with its own SOP Instance UID, slice position and
    comment, the study's and series' descriptions as scanners write them (the same on every slice)."""
    slices = []
    for number in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{number + 1}"
        ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
        ds.SeriesDescription = "AXIAL 2.5MM SOFT TISSUE PORTAL VENOUS"
        ds.ImageComments = f"SLICE {number + 1} Z {number * 2.5:.1f}"
        ds.ProtocolName = "ROUTINE CAP"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        slices.append(buffer.getvalue())
    return slices


def false_quarantines(profile_path: Path, corpus: list[bytes]) -> tuple[int, int, int, int]:
    """(quarantined, of) for the mixed corpus and for the conformance corpus (seed 0): instances
    whose only PHI is in the attributes the profile removes, so every quarantine is a false one."""
    import tempfile

    from tests.conformance.generate import generate_corpus

    profile = load_profile(profile_path)
    deidentifier, look = MetadataDeidentifier(profile), LastLook(profile.text)
    mappings = DerivedMappings(KeyedDerivation(secret=b"bench-secret"))

    def quarantined(data: bytes) -> bool:
        ds = pydicom.dcmread(io.BytesIO(data))
        phi = collect_header_phi(ds)
        deidentifier.apply(ds, mappings, phi)
        try:
            look.check(ds, phi)
        except ResidualPhi:
            return True
        return False

    with tempfile.TemporaryDirectory() as tmp:
        key = generate_corpus(Path(tmp), seed=0)
        conformance = [(Path(tmp) / name).read_bytes() for name in key.files]
    return sum(map(quarantined, corpus)), len(corpus), sum(map(quarantined, conformance)), len(conformance)


def free_text_cost(profile_path: Path, rounds: int, slices: int = 60) -> tuple[float, float]:
    """Milliseconds per CT slice after the first, without and with free-text analysis (best round)."""
    profile = load_profile(profile_path)
    without_model = dataclasses.replace(
        profile, text=dataclasses.replace(profile.text, entities=None, last_look=LastLookSettings())
    )
    series = ct_series(slices)
    costs = []
    for chosen, look in ((without_model, None), (profile, LastLook(profile.text))):
        deidentifier = MetadataDeidentifier(chosen)
        best = float("inf")
        for _ in range(rounds):
            mappings = DerivedMappings(KeyedDerivation(secret=b"bench-secret"))
            first = pydicom.dcmread(io.BytesIO(series[0]))
            phi = collect_header_phi(first)
            deidentifier.apply(first, mappings, phi)
            if look is not None:
                look.check(first, phi)
            started = time.perf_counter()
            for data in series[1:]:
                ds = pydicom.dcmread(io.BytesIO(data))
                phi = collect_header_phi(ds)
                deidentifier.apply(ds, mappings, phi)
                if look is not None:
                    look.check(ds, phi)
            best = min(best, (time.perf_counter() - started) / (len(series) - 1) * 1000)
        costs.append(best)
    return costs[0], costs[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default=str(ROOT / "config" / "profiles" / "tcia.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    corpus = mixed_corpus()
    profile = load_profile(Path(args.profile))
    deidentifier = MetadataDeidentifier(profile)
    last_look = LastLook(profile.text)
    mappings = DerivedMappings(KeyedDerivation(secret=b"bench-secret"))
    anonymizer = Anonymizer()

    def ours(ds: pydicom.Dataset) -> object:
        phi = collect_header_phi(ds)
        report = deidentifier.apply(ds, mappings, phi)
        last_look.check(ds, phi)
        return report

    ours(pydicom.dcmread(io.BytesIO(corpus[0])))  # the model loads once per process, as in a worker
    found = rates(corpus, {"parse": lambda ds: None, "node": ours, "dicognito": anonymizer.anonymize}, args.rounds)
    parse_only, node, dicognito = found["parse"], found["node"], found["dicognito"]
    print(f"corpus: {len(corpus)} instances (pydicom + pydicom-data test files <= 2 MiB), profile {Path(args.profile).name}, best of {args.rounds}")
    print(f"parse only : {parse_only:8.1f} instances/s")
    print(f"deid-node  : {node:8.1f} instances/s (parse + metadata step + last look)")
    print(f"dicognito  : {dicognito:8.1f} instances/s (parse + anonymize)")
    print(f"ratio      : {node / dicognito:8.2f}x")
    alone = 1 / (1 / node - 1 / parse_only)
    peer_alone = 1 / (1 / dicognito - 1 / parse_only)
    print(f"step alone : {alone:8.1f} vs {peer_alone:.1f} instances/s (parse time subtracted), ratio {alone / peer_alone:.2f}x")
    before, after = free_text_cost(Path(args.profile), args.rounds)
    print(f"CT series  : {before:8.2f} ms/instance without free-text analysis, {after:.2f} ms with it "
          f"(named entities + last look): +{after - before:.2f} ms per instance after the first")
    mixed, of_mixed, conformance, of_conformance = false_quarantines(Path(args.profile), corpus)
    print(f"last look  : {mixed}/{of_mixed} mixed-corpus and {conformance}/{of_conformance} conformance-corpus "
          "instances quarantined (clean data: every one would be a false quarantine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
