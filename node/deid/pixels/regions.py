"""Device-signature rules that black out fixed rectangles, read from burned-in-regions.yaml.

The rules come from CTP's DicomPixelAnonymizer library (see the converter in ctp_regions.py);
they encode what vendors are known to burn in at fixed places, so they apply even where OCR
would read nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from node.deid.pixels.outcome import PixelPolicyError

Box = tuple[int, int, int, int]  # x, y, width, height

_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "equals": lambda v, x: v == x,
    "equalsIgnoreCase": lambda v, x: v.lower() == x.lower(),
    "contains": lambda v, x: x in v,
    "containsIgnoreCase": lambda v, x: x.lower() in v.lower(),
    "startsWith": lambda v, x: v.startswith(x),
    "startsWithIgnoreCase": lambda v, x: v.lower().startswith(x.lower()),
    "endsWith": lambda v, x: v.endswith(x),
    "endsWithIgnoreCase": lambda v, x: v.lower().endswith(x.lower()),
}


def attribute_text(ds: Dataset, attribute: str) -> str | None:
    """An attribute's value as CTP compares it: keyword or "[gggg,eeee]"; file meta included."""
    tag = _tag(attribute)
    if tag is None:
        return None
    meta = getattr(ds, "file_meta", None)
    for source in (ds, meta):
        if source is not None and tag in source:
            value = source[tag].value
            if isinstance(value, (list, tuple, MultiValue)):
                return "\\".join(str(v) for v in value)
            return "" if value is None else str(value)
    return None


class _Attributes:
    """One instance's attribute values as CTP compares them, each looked up once: the rules test
    the same dozen attributes over and over."""

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self._seen: dict[str, str | None] = {}

    def text(self, attribute: str) -> str | None:
        if attribute not in self._seen:
            self._seen[attribute] = attribute_text(self._ds, attribute)
        return self._seen[attribute]


@dataclass(frozen=True)
class Condition:
    """A tree of all/any/not over attribute tests, as CTP's `*`, `+` and `!` combine them."""

    kind: str  # "all", "any", "not", "test"
    children: tuple["Condition", ...] = ()
    attribute: str = ""
    operator: str = ""
    value: str = ""

    def holds(self, attributes: _Attributes) -> bool:
        if self.kind == "all":
            return all(c.holds(attributes) for c in self.children)
        if self.kind == "any":
            return any(c.holds(attributes) for c in self.children)
        if self.kind == "not":
            return not self.children[0].holds(attributes)
        actual = attributes.text(self.attribute)
        return actual is not None and _OPERATORS[self.operator](actual, self.value)


@dataclass(frozen=True)
class RegionRule:
    name: str
    when: Condition
    boxes: tuple[Box, ...]


def parse_condition(raw: Any, where: str) -> Condition:
    """Build a Condition from its YAML form; `where` names the file and rule for error messages."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise PixelPolicyError(f"{where}: a condition must be a mapping with one key")
    (key, value), = raw.items()
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise PixelPolicyError(f"{where}: '{key}' needs a non-empty list")
        return Condition(key, tuple(parse_condition(v, where) for v in value))
    if key == "not":
        return Condition("not", (parse_condition(value, where),))
    if not isinstance(value, dict) or len(value) != 1:
        raise PixelPolicyError(f"{where}: test on '{key}' needs one operator and value")
    (operator, operand), = value.items()
    if operator not in _OPERATORS:
        raise PixelPolicyError(f"{where}: unknown operator '{operator}'")
    if _tag(key) is None:
        raise PixelPolicyError(f"{where}: unknown attribute '{key}'")
    return Condition("test", attribute=key, operator=operator, value=str(operand))


@lru_cache(maxsize=1024)
def _tag(attribute: str) -> BaseTag | None:
    """A keyword or CTP's "[gggg,eeee]" as a tag; None if it names no attribute."""
    try:
        if attribute.startswith("["):
            return Tag(int(attribute.strip("[]").replace(",", ""), 16))
        return Tag(attribute)
    except (ValueError, TypeError):
        return None


def _parse_box(raw: Any, where: str) -> Box:
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, int) and v >= 0 for v in raw)):
        raise PixelPolicyError(f"{where}: a box is [x, y, width, height] of non-negative integers")
    x, y, w, h = raw
    return x, y, w, h


def load_region_rules(path: Path) -> tuple[RegionRule, ...]:
    """Read and validate the region library; a bad rule stops loading with file and rule named."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PixelPolicyError(f"{path}: cannot read region rules ({type(exc).__name__})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise PixelPolicyError(f"{path}: expected a mapping with a 'rules' list")
    rules = []
    for index, item in enumerate(raw["rules"]):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{path}: rule {index} ({name or 'unnamed'})"
        if not isinstance(name, str) or "when" not in item or not isinstance(item.get("boxes"), list):
            raise PixelPolicyError(f"{where}: needs 'name', 'when' and 'boxes'")
        boxes = tuple(_parse_box(b, where) for b in item["boxes"])
        rules.append(RegionRule(name, parse_condition(item["when"], where), boxes))
    return tuple(rules)


def matching_boxes(rules: tuple[RegionRule, ...], ds: Dataset) -> tuple[list[str], list[Box]]:
    """Names of the rules that match this instance, and all their boxes."""
    names: list[str] = []
    boxes: list[Box] = []
    attributes = _Attributes(ds)
    for rule in rules:
        if rule.when.holds(attributes):
            names.append(rule.name)
            boxes.extend(rule.boxes)
    return names, boxes
