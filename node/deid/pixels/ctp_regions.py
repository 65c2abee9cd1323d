"""Convert CTP's burned-in region script into config/burned-in-regions.yaml.

Run: python -m node.deid.pixels.ctp_regions config/reference/ctp-burned-in-regions.script \
         config/burned-in-regions.yaml
The script is a free-text document; signatures are `{ expression }` blocks followed by
`(x,y,w,h)` boxes, with `*` = and, `+` = or, `!` = not. Keeping the conversion as code makes the
YAML reproducible when the upstream library changes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

_TOKEN = re.compile(
    r'\s*(?:(?P<op>[*+!()])|(?P<test>(?P<attr>\[[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\]|\w+)\.(?P<method>\w+)\s*\(\s*"(?P<value>[^"]*)"\s*\)))'
)
_BLOCK = re.compile(r"\{(?P<expr>[^}]*)\}(?P<boxes>(?:\s*\(\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\))+)")
_BOX = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")
_SECTION = re.compile(r"^\*+\s*$")


class _Parser:
    """Recursive descent over CTP's boolean signature language."""

    def __init__(self, text: str) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0

    @staticmethod
    def _tokenize(text: str) -> list[Any]:
        tokens: list[Any] = []
        pos = 0
        while text[pos:].strip():
            match = _TOKEN.match(text, pos)
            if not match:
                raise ValueError(f"cannot parse signature near: {text[pos:pos + 40]!r}")
            if match.group("op"):
                tokens.append(match.group("op"))
            else:
                tokens.append({match.group("attr"): {match.group("method"): match.group("value")}})
            pos = match.end()
        return tokens

    def _peek(self) -> Any:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> Any:
        token = self._peek()
        self.pos += 1
        return token

    def expression(self) -> Any:
        terms = [self.term()]
        while self._peek() == "+":
            self._take()
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else {"any": terms}

    def term(self) -> Any:
        factors = [self.factor()]
        while self._peek() == "*":
            self._take()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else {"all": factors}

    def factor(self) -> Any:
        token = self._take()
        if token == "!":
            return {"not": self.factor()}
        if token == "(":
            inner = self.expression()
            if self._take() != ")":
                raise ValueError("unbalanced parentheses in signature")
            return inner
        if isinstance(token, dict):
            return token
        raise ValueError(f"unexpected token {token!r} in signature")


def _labels_before(text: str, start: int) -> tuple[str, list[str]]:
    """The section (CT, US ...) and the free-text headings that precede a signature."""
    section, labels = "", []
    in_banner = in_signature = False
    for line in text[:start].splitlines():
        stripped = line.strip()
        if in_signature or stripped.startswith("{"):
            in_signature = "}" not in stripped
            continue
        if _SECTION.match(stripped):
            in_banner = not in_banner
            labels = [] if in_banner else labels
            continue
        if in_banner and stripped:
            section = stripped
        elif stripped and not stripped.startswith("("):
            if not line[:1].isspace():
                labels = [stripped]
            else:
                labels = labels[:1] + [stripped]
    return section, labels


def convert(script: str) -> list[dict[str, Any]]:
    rules = []
    seen: dict[str, int] = {}
    body_start = script.find("*****")
    for block in _BLOCK.finditer(script, body_start):
        parser = _Parser(block.group("expr"))
        when = parser.expression()
        if parser._peek() is not None:
            raise ValueError("trailing tokens in signature")
        section, labels = _labels_before(script, block.start())
        base = " / ".join([section] + [lb.rstrip(":").split(" - This")[0] for lb in labels])
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base} #{seen[base]}"
        boxes = [[int(v) for v in box] for box in _BOX.findall(block.group("boxes"))]
        rules.append({"name": name, "when": when, "boxes": boxes})
    return rules


HEADER = """\
# Burned-in PHI regions by device signature (x, y, width, height in pixels; boxes are blacked out).
# Converted from CTP's DicomPixelAnonymizer library, config/reference/ctp-burned-in-regions.script
# (copy of ../shared/reference/ctp-burned-in-regions.script), by
#   python -m node.deid.pixels.ctp_regions config/reference/ctp-burned-in-regions.script config/burned-in-regions.yaml
# Conditions: `all` (CTP `*`), `any` (CTP `+`), `not` (CTP `!`); a test is {Attribute: {method: value}}
# with CTP's method names (equals, containsIgnoreCase ...); attributes are keywords or "[gggg,eeee]".
# As upstream says: review images yourself; these rules only cover devices someone reported.
"""


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    rules = convert(source.read_text())
    body = yaml.safe_dump({"rules": rules}, sort_keys=False, default_flow_style=None, width=110)
    target.write_text(HEADER + body)
    print(f"{len(rules)} rules written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
