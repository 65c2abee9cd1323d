"""Free-text cleaning: remove identifiers from descriptions and comments, keep the clinical words.

Two sources of identifiers: the instance's own header values (names in any order and case, IDs,
dates in the printed forms phi.py derives) matched as whole words, and the policy's patterns
(phone numbers, e-mail, URLs, "Dr. <Name>" ...) from config. Only the match is removed, so
"CT CHEST W CONTRAST DOE^JANE 01/31/2024" keeps "CT CHEST W CONTRAST".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from node.deid.phi import HeaderPhi

_SPACES = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class TextPolicy:
    """Named regular expressions whose matches are identifiers wherever free text is cleaned."""

    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()
    replacement: str = ""

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> TextPolicy:
        unknown = set(raw) - {"patterns", "replacement"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        compiled = []
        for name, expression in (raw.get("patterns") or {}).items():
            try:
                compiled.append((str(name), re.compile(str(expression))))
            except re.error as exc:
                raise ValueError(f"pattern {name!r}: {exc}") from exc
        return cls(tuple(compiled), str(raw.get("replacement", "")))


class TextCleaner:
    """Cleans the free text of one instance against that instance's own header PHI."""

    def __init__(self, policy: TextPolicy, phi: HeaderPhi) -> None:
        self._policy = policy
        terms = [re.escape(t) for t in phi.terms() if t.strip()]
        self._terms = (
            re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(terms) + r")(?![A-Za-z0-9])", re.IGNORECASE)
            if terms
            else None
        )

    def clean(self, text: str) -> str:
        cleaned = text
        for _, pattern in self._policy.patterns:
            cleaned = pattern.sub(self._policy.replacement, cleaned)
        if self._terms is not None:
            cleaned = self._terms.sub(self._policy.replacement, cleaned)
        if cleaned == text:
            return text
        return _SPACES.sub(" ", cleaned).strip(" ,;:-^")
