"""Build config/private-tags.csv, the creator-aware private tag safe list, from the references.

Sources (config/reference/): TCIA's Private Tag Knowledge Base (k keep, d delete, h hash UID,
o offset date; oi and na are treated as delete) and RSNA CTP's private dictionary (code="K" is
safe to keep). TCIA wins where both speak. Rows are keyed by (group, creator, element byte): a
row found only inside a sequence path still describes that element. Where rows for one key
disagree, the top-level row wins, then the more cautious disposition (d, o, h, k). A kept UID
becomes h and a kept date o, so no private identifier survives unchanged.

Usage: python scripts/build_private_tags.py   (rewrites config/private-tags.csv)
"""

from __future__ import annotations

import csv
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "config"
TCIA_KB = CONFIG / "reference" / "tcia-private-tag-kb-2024-02-01.csv"
CTP_DICTIONARY = CONFIG / "reference" / "ctp-private-tag-dictionary.xml"
OUTPUT = CONFIG / "private-tags.csv"

LAST_PRIVATE = re.compile(r'\(([0-9A-Fa-f]{4}),"*([^"]*?)"*,([0-9A-Fa-f]{2})\)$')
CAUTION = {"d": 0, "o": 1, "h": 2, "k": 3}
TCIA_DISPOSITION = {"k": "k", "d": "d", "h": "h", "o": "o"}  # oi, na, blank: delete

Key = tuple[int, str, int]


def _by_vr(disposition: str, vr: str) -> str:
    if disposition == "k" and vr == "UI":
        return "h"
    if disposition == "k" and vr in ("DA", "DT"):
        return "o"
    return disposition


def tcia_rows() -> dict[Key, tuple[bool, str, str]]:
    """(group, creator, element) -> (top level?, disposition, vr)."""
    chosen: dict[Key, tuple[bool, str, str]] = {}
    with TCIA_KB.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            match = LAST_PRIVATE.search(row["element_sig_pattern"].strip())
            if match is None or int(match.group(1), 16) % 2 == 0:
                continue  # a public attribute inside a private sequence: public rules apply
            key = (int(match.group(1), 16), match.group(2).strip().upper(), int(match.group(3), 16))
            vr = row["vr"].strip().upper()
            disposition = _by_vr(TCIA_DISPOSITION.get(row["private_disposition"].strip().lower(), "d"), vr)
            candidate = ("[" not in row["element_sig_pattern"], disposition, vr)
            previous = chosen.get(key)
            if previous is None or (candidate[0], -CAUTION[candidate[1]]) > (previous[0], -CAUTION[previous[1]]):
                chosen[key] = candidate
    return chosen


def ctp_rows() -> dict[Key, tuple[str, str]]:
    rows: dict[Key, tuple[str, str]] = {}
    for element in ET.parse(CTP_DICTIONARY).getroot().iter("element"):
        if element.get("code") != "K":
            continue
        try:
            key = (int(element.get("gp", ""), 16), element.get("cr", "").strip().upper(), int(element.get("el", ""), 16))
        except ValueError:
            continue
        vr = (element.get("vr") or "").upper()
        if key[0] % 2 == 1 and key[2] <= 0xFF:
            rows[key] = (_by_vr("k", vr), vr)
    return rows


def main() -> int:
    tcia = tcia_rows()
    ctp = ctp_rows()
    with OUTPUT.open("w", newline="") as handle:
        handle.write(
            "# Private tag dispositions, creator-aware: built by scripts/build_private_tags.py from\n"
            "# config/reference/tcia-private-tag-kb-2024-02-01.csv (TCIA) and ctp-private-tag-dictionary.xml (CTP).\n"
            "# disposition: k keep, d delete, h replace the UID, o shift the date. Unlisted: delete.\n"
        )
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "creator", "element", "vr", "disposition", "source"])
        for key in sorted(set(tcia) | set(ctp)):
            group, creator, element = key
            if key in tcia:
                _, disposition, vr = tcia[key]
                source = "tcia"
            else:
                disposition, vr = ctp[key]
                source = "ctp"
            writer.writerow([f"{group:04X}", creator, f"{element:02X}", vr, disposition, source])
    kept = sum(1 for k in tcia if tcia[k][1] != "d") + sum(1 for k in ctp if k not in tcia)
    print(f"{OUTPUT}: {len(set(tcia) | set(ctp))} rows, {kept} not deleted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
