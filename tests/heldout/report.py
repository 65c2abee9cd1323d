"""Print the held-out table for a seed group: `python -m tests.heldout.report --seeds report`
(or `tune`). Generates each seed's corpus in a temporary folder, runs the node's
de-identification in-process, scores it; prints only percentages and failure classes, no values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from node.logging import configure_logging
from tests.heldout.generate import SEEDS, generate_corpus
from tests.heldout.score import BARS, Result, run_node, score

STUDIES_PER_SEED = 3


def measure(seed: int, workdir: Path, *, studies: int = STUDIES_PER_SEED) -> Result:
    corpus = workdir / f"corpus-{seed}"
    truths = generate_corpus(corpus, seed, studies=studies)
    return score(corpus, truths, run_node(corpus, truths, workdir / f"node-{seed}"))


def table(group: str, seeds: tuple[int, ...], result: Result, seconds: float) -> str:
    lines = [
        f"held-out seeds {group} {','.join(map(str, seeds))}: {result.instances} instances, "
        f"{result.quarantined} quarantined, {seconds:.0f} s",
        f"  MIDI-B checks passed          {result.midi_b:8.2%}  ({sum(result.per_action.values())}/{sum(result.totals.values())})",
        f"  burned-in PHI hidden          {result.hidden:8.2%}  ({result.phi_images_hidden}/{result.phi_images} instances)",
        f"  clinical text kept            {result.kept:8.2%}  ({result.per_action['text_retained']}/{result.totals['text_retained']})",
        f"  images without PHI unchanged  {result.unchanged:8.2%}  ({result.clean_images_unchanged}/{result.clean_images})",
        f"  bars of issue 14 missed: {'; '.join(BARS.shortfalls(result)) or 'none'}",
        "  per check:",
        *(f"    {a:18s} {result.per_action[a]:5d}/{t:<5d}" for a, t in sorted(result.totals.items())),
        "  failures by class:",
        *(f"    {n:5d}  {cls}" for cls, n in sorted(result.failures.items(), key=lambda kv: (-kv[1], kv[0]))),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", choices=sorted(SEEDS), default="report")
    parser.add_argument("--studies", type=int, default=STUDIES_PER_SEED, help="studies per seed")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console", "heldout-report")  # the node's per-instance lines would drown the table
    started = time.perf_counter()
    total = Result()
    with tempfile.TemporaryDirectory(prefix="heldout-") as tmp:
        for seed in SEEDS[args.seeds]:
            total.add(measure(seed, Path(tmp), studies=args.studies))
    print(table(args.seeds, SEEDS[args.seeds], total, time.perf_counter() - started))


if __name__ == "__main__":
    main()
