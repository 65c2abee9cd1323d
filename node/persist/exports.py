"""Exporting the map as CSV: `id_old,id_new` for patients and UIDs (the format MIDI-B's scorer
and TCIA read), `id_old,id_new,offset_days` for date offsets (which `import-patient-map` reads
back). Rows are streamed, so a large UID map never sits in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import TextIO

from node.persist.mappings import MappingStore, Scope

KINDS = ("patients", "uids", "offsets")


def export(store: MappingStore, kind: str, scope: Scope, out: TextIO) -> int:
    """Write one kind of map for `scope`; the number of rows written (header not counted)."""
    rows: Iterable[tuple[object, ...]]
    if kind == "uids":
        header = ("id_old", "id_new")
        rows = ((row.original, row.new) for row in store.uid_rows(scope))
    elif kind == "patients":
        header = ("id_old", "id_new")
        rows = ((row.original, row.pseudonym) for row in store.patient_rows(scope))
    elif kind == "offsets":
        header = ("id_old", "id_new", "offset_days")
        rows = ((row.original, row.pseudonym, row.offset_days) for row in store.patient_rows(scope))
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
