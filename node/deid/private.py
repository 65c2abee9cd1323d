"""Private attributes: which ones are safe to keep, recognised by creator, never by tag number.

Vendors reuse the same private tag numbers for unrelated data; only the Private Creator string
(the reservation in (gggg,00xx)) says what (gggg,xxyy) holds. The safe list is data
(config/private-tags.csv) built from TCIA's private tag knowledge base and CTP's dictionary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

KEEP, DELETE, HASH_UID, OFFSET_DATE = "k", "d", "h", "o"
DISPOSITIONS = frozenset({KEEP, DELETE, HASH_UID, OFFSET_DATE})


class PrivateListError(ValueError):
    """The private tag list cannot be used; the message names the file and row."""


def creator_key(creator: str) -> str:
    """Creators are compared as vendors write them, ignoring case and padding."""
    return creator.strip().rstrip("\x00").strip().upper()


@dataclass(frozen=True)
class PrivateRule:
    """What to do with one private element, and its VR (implicit VR files only say UN)."""

    disposition: str
    vr: str


_UNLISTED = PrivateRule(DELETE, "UN")
_NO_RULES: Mapping[int, PrivateRule] = MappingProxyType({})


@dataclass(frozen=True)
class PrivateSafeList:
    """(group, creator, element byte) -> rule; anything not listed is deleted."""

    entries: Mapping[tuple[int, str, int], PrivateRule]

    @classmethod
    def empty(cls) -> PrivateSafeList:
        return cls(MappingProxyType({}))

    def rule(self, group: int, creator: str, element_byte: int) -> PrivateRule:
        return self.block(group, creator).get(element_byte, _UNLISTED)

    def block(self, group: int, creator: str) -> Mapping[int, PrivateRule]:
        """The rules for one creator's block by element byte, looked up once for all its elements."""
        return self._blocks.get((group, creator_key(creator)), _NO_RULES)

    @cached_property
    def _blocks(self) -> Mapping[tuple[int, str], Mapping[int, PrivateRule]]:
        blocks: dict[tuple[int, str], dict[int, PrivateRule]] = {}
        for (group, creator, element_byte), rule in self.entries.items():
            blocks.setdefault((group, creator), {})[element_byte] = rule
        return blocks

    def __len__(self) -> int:
        return len(self.entries)


def load_private_safe_list(path: Path) -> PrivateSafeList:
    entries: dict[tuple[int, str, int], PrivateRule] = {}
    with path.open(newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        for number, row in enumerate(rows, start=2):
            try:
                group = int(row["group"], 16)
                element = int(row["element"], 16)
                disposition = row["disposition"].strip()
            except (KeyError, ValueError, AttributeError) as exc:
                raise PrivateListError(f"{path}: row {number}: {exc}") from exc
            if group % 2 == 0 or not 0 <= element <= 0xFF or disposition not in DISPOSITIONS:
                raise PrivateListError(
                    f"{path}: row {number}: need an odd group, an element byte 00-FF and one of "
                    f"{sorted(DISPOSITIONS)}"
                )
            vr = (row.get("vr") or "UN").strip().upper() or "UN"
            entries[(group, creator_key(row["creator"]), element)] = PrivateRule(disposition, vr)
    return PrivateSafeList(MappingProxyType(entries))
