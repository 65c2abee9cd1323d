"""Benchmark only: `deid-node` with de-identification replaced by a plain copy of the file.

It measures what the node's transport costs with de-identification free: storescu -> the SCP
(spool, fsync, job row) -> a worker that claims the job, copies the received file to clean/ and
settles it -> the forwarder's C-STORE. That rate is the most any de-identification could reach on
this machine, the ceiling `node_vs_wire` is read against (bench_node.py --transport-ceiling).

It forwards what it receives unchanged, PHI included: only the benchmark starts it, against its
own sink or Orthanc, with the synthetic corpora. The node itself has no such switch.

The copy is installed when this file is imported, as the main program and again in every worker
process (multiprocessing's spawn runs the main program's file in each child as `__mp_main__`).

    python bench/transport_only.py --config node.yaml serve
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.deid import pipeline  # noqa: E402
from node.deid.pseudonyms import Mappings  # noqa: E402


def _copy(_deidentifier: pipeline.Deidentifier, original: Path | BinaryIO, _mappings: Mappings) -> pipeline.DeidOutcome:
    """The received file (opened from its sealed spool copy) as the "clean" one: no parse, no
    rules, no mapping rows."""
    data = Path(original).read_bytes() if isinstance(original, Path) else original.read()
    return pipeline.DeidOutcome([data], new_sop_instance_uid="", new_study_instance_uid=None,
                                patient_pseudonym="TRANSPORT-ONLY", metadata=None, pixels=None)  # type: ignore[arg-type]


pipeline.Deidentifier.run_file = _copy  # type: ignore[method-assign]

if __name__ == "__main__":
    from node.cli import main

    main()
