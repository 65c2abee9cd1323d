"""De-identification profiles: rules an administrator reads and edits, compiled once at start-up.

A profile is a YAML file under config/profiles/ that names the PS3.15 table it builds on, the
options it selects, what happens to attributes the table does not name, and its own rule
overrides. Everything is parsed, validated and turned into lookup tables here, so that applying
it to an instance is a dictionary lookup per element, and a typo stops the node at start-up with
the file, line and rule instead of leaking or failing hours later.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml
from pydicom.datadict import keyword_dict

from node.config import ConfigError
from node.deid.private import PrivateListError, PrivateSafeList, load_private_safe_list
from node.deid.text import TextPolicy

SINGLE_CODES = frozenset({"D", "Z", "X", "K", "C", "U"})
COMBINED_CODES = frozenset({"X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
ACTION_CODES = SINGLE_CODES | COMBINED_CODES
VALUE_PLACEHOLDERS = frozenset({"patient_id", "patient_name"})
PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
_TAG_TEXT = re.compile(r"\(?\s*([0-9A-Fa-fXx]{4})\s*,\s*([0-9A-Fa-fXx]{4})\s*\)?")
_PROFILE_KEYS = frozenset(
    {"name", "description", "table", "table_additions", "option_definitions", "attribute_types", "options",
     "defaults", "rules", "private_tags", "free_text", "max_age_years"}
)
_DEFAULT_KEYS = frozenset({"unlisted_public", "unlisted_by_vr", "unknown_public"})


class ProfileError(Exception):
    """The profile cannot be used; the message names the file, the line where known, and the rule."""


@dataclass(frozen=True)
class Rule:
    """What to do with one attribute: a PS3.15 action code, and for D an optional dummy template."""

    code: str
    value: str | None = None


@dataclass(frozen=True)
class CodeItem:
    """One CID 7050 code, as written to DeidentificationMethodCodeSequence."""

    value: str
    meaning: str


@dataclass(frozen=True)
class TagMask:
    """A tag range such as (50xx,xxxx): the bits that must match, and their value."""

    mask: int
    value: int

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.value

    @property
    def specificity(self) -> int:
        return bin(self.mask).count("1")


@dataclass(frozen=True)
class AttributeTypes:
    """Type 1/2/3 of the attributes with combined codes, per SOP Class prefix (longest wins)."""

    by_tag: Mapping[int, tuple[tuple[str, int], ...]] = field(default_factory=dict)

    def type_of(self, tag: int, sop_class_uid: str) -> int:
        for prefix, kind in self.by_tag.get(tag, ()):
            if sop_class_uid.startswith(prefix):
                return kind
        return 3


@dataclass(frozen=True)
class Profile:
    """A compiled profile: every lookup `apply` needs, built once."""

    name: str
    source: Path
    basic_code: CodeItem
    options: tuple[str, ...]
    option_codes: tuple[CodeItem, ...]
    exact: Mapping[int, Rule]
    masks: tuple[tuple[TagMask, Rule], ...]
    unlisted_public: Rule
    unlisted_by_vr: Mapping[str, Rule]
    unknown_public: Rule
    private: Rule
    safe_private: PrivateSafeList
    attribute_types: AttributeTypes
    text: TextPolicy
    max_age_years: int | None

    def rule_for(self, tag: int) -> Rule | None:
        """The rule the table, options and overrides give this public tag, if any names it."""
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        for mask, masked_rule in self.masks:
            if mask.matches(tag):
                return masked_rule
        return None


class _LineDict(dict):
    """A mapping that knows the line it starts on and the line of each of its keys."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember their line, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    mapping = _LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {key.value: key.start_mark.line + 1 for key, _ in node.value}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Where:
    """Builds ProfileError messages that point at the file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, message: str, line: int | None = None) -> ProfileError:
        place = f"{self.path}:{line}" if line else str(self.path)
        return ProfileError(f"{place}: {message}")


def parse_tag(text: str) -> int | TagMask:
    """A tag written as a keyword, `(gggg,eeee)`, `ggggeeee`, or a range with x digits."""
    text = str(text).strip()
    if text in keyword_dict:
        return keyword_dict[text]
    compact = text.replace(" ", "")
    match = _TAG_TEXT.fullmatch(compact) or (
        _TAG_TEXT.fullmatch(f"({compact[:4]},{compact[4:]})") if len(compact) == 8 else None
    )
    if match is None:
        raise ValueError(f"not a tag, keyword or tag range: {text!r}")
    digits = (match.group(1) + match.group(2)).upper()
    if "X" not in digits:
        return int(digits, 16)
    mask = int("".join("0" if d == "X" else "F" for d in digits), 16)
    value = int(digits.replace("X", "0"), 16)
    return TagMask(mask, value)


def _read_yaml(path: Path) -> _LineDict:
    where = _Where(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError as exc:
        raise where.error("file not found") from exc
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise where.error(f"not valid YAML: {exc}", line + 1 if line is not None else None) from exc
    if not isinstance(raw, dict):
        raise where.error("the top level must be a mapping")
    return raw


def _resolve(base: Path, raw: _LineDict, key: str, where: _Where) -> Path:
    value, line = raw.get(key), raw.line_of(key)
    if not isinstance(value, str) or not value:
        raise where.error(f"'{key}' must name a file", line)
    path = (base / value).resolve()
    if not path.is_file():
        raise where.error(f"'{key}': file not found: {path}", line)
    return path


def _code(value: Any, where: _Where, line: int, context: str) -> str:
    if value not in ACTION_CODES:
        raise where.error(
            f"{context}: unknown action {value!r} (use one of {', '.join(sorted(ACTION_CODES))})", line
        )
    return str(value)


@dataclass(frozen=True)
class _OptionSpec:
    column: str
    code: CodeItem
    unlisted_by_vr: Mapping[str, str]
    excludes: tuple[str, ...]


def _load_option_specs(path: Path) -> tuple[CodeItem, dict[str, _OptionSpec]]:
    raw = _read_yaml(path)
    where = _Where(path)
    try:
        basic = CodeItem(str(raw["basic_code"]["value"]), str(raw["basic_code"]["meaning"]))
        specs = {
            name: _OptionSpec(
                column=str(spec["column"]),
                code=CodeItem(str(spec["code"]["value"]), str(spec["code"]["meaning"])),
                unlisted_by_vr=dict(spec.get("unlisted_by_vr") or {}),
                excludes=tuple(spec.get("excludes") or ()),
            )
            for name, spec in raw["options"].items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise where.error(f"option definitions malformed near {exc!r}") from exc
    return basic, specs


def _selected_options(
    raw: _LineDict, specs: dict[str, _OptionSpec], where: _Where
) -> tuple[str, ...]:
    options = raw.get("options") or []
    if not isinstance(options, list):
        raise where.error("'options' must be a list of option names", raw.line_of("options"))
    for name in options:
        if name not in specs:
            raise where.error(f"unknown option {name!r} (known: {', '.join(specs)})", raw.line_of("options"))
        clash = set(specs[name].excludes) & set(options)
        if clash:
            raise where.error(f"option {name!r} cannot be combined with {sorted(clash)}", raw.line_of("options"))
    return tuple(options)


def _table_action(row: dict[str, str], columns: list[str]) -> str:
    """The row's action under the selected options: an option's K wins over its C, either over basic."""
    chosen = {row[c] for c in columns if row.get(c)}
    if "K" in chosen:
        return "K"
    if chosen:
        return chosen.pop()
    return row["basicProfile"]


def _read_rows(path: Path) -> list[dict[str, str]]:
    """Table rows from the PS3.15 JSON, or from a YAML file of additions in the same form."""
    where = _Where(path)
    try:
        rows = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise where.error(f"cannot read the table: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "tag" in r and "basicProfile" in r for r in rows):
        raise where.error("a table is a list of rows, each with 'tag' and 'basicProfile'")
    return rows


def _load_table(
    paths: list[Path], columns: list[str]
) -> tuple[dict[int, Rule], dict[TagMask, Rule], Rule]:
    exact: dict[int, Rule] = {}
    masks: dict[TagMask, Rule] = {}
    private = Rule("X")
    for path in paths:
        where = _Where(path)
        for number, row in enumerate(_read_rows(path), start=1):
            private = _table_row(row, number, columns, where, exact, masks) or private
    return exact, masks, private


def _table_row(
    row: dict[str, str],
    number: int,
    columns: list[str],
    where: _Where,
    exact: dict[int, Rule],
    masks: dict[TagMask, Rule],
) -> Rule | None:
    """File one table row under its tag or range; return its rule if it is the private row."""
    action = _code(_table_action(row, columns), where, 0, f"row {number} {row.get('tag')}")
    if row["tag"].upper() == PRIVATE_ROW:
        return Rule(action)
    try:
        tag = parse_tag(row["tag"])
    except ValueError as exc:
        raise where.error(f"row {number}: {exc}") from exc
    (masks if isinstance(tag, TagMask) else exact)[tag] = Rule(action)  # type: ignore[index]
    return None


def _load_attribute_types(path: Path) -> AttributeTypes:
    where = _Where(path)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    by_tag: dict[int, list[tuple[str, int]]] = {}
    for number, row in enumerate(csv.DictReader(lines), start=2):
        try:
            tag = parse_tag(row["tag"])
            kind = int(row["type"])
        except (ValueError, KeyError, TypeError) as exc:
            raise where.error(f"row {number}: {exc}") from exc
        if isinstance(tag, TagMask) or kind not in (1, 2, 3):
            raise where.error(f"row {number}: need one exact tag and a type of 1, 2 or 3")
        by_tag.setdefault(tag, []).append((row.get("sop_class_prefix") or "", kind))
    return AttributeTypes(
        MappingProxyType(
            {tag: tuple(sorted(rows, key=lambda r: -len(r[0]))) for tag, rows in by_tag.items()}
        )
    )


def _rule_from_entry(entry: Any, number: int, where: _Where) -> tuple[int | TagMask, Rule]:
    if not isinstance(entry, _LineDict):
        raise where.error(f"rule {number}: must be a mapping with 'tag' and 'action'")
    context = f"rule {number} ({entry.get('tag')!r})"
    unknown = set(entry) - {"tag", "action", "value", "why"}
    if unknown:
        raise where.error(f"{context}: unknown keys {sorted(unknown)}", entry.line)
    try:
        tag = parse_tag(entry["tag"])
    except (KeyError, ValueError) as exc:
        raise where.error(f"{context}: {exc}", entry.line) from exc
    code = _code(entry.get("action"), where, entry.line, context)
    value = entry.get("value")
    if value is not None:
        if code != "D":
            raise where.error(f"{context}: 'value' is only meaningful with action D", entry.line)
        names = set(re.findall(r"\{(\w+)\}", str(value)))
        if names - VALUE_PLACEHOLDERS:
            raise where.error(
                f"{context}: unknown placeholder(s) {sorted(names - VALUE_PLACEHOLDERS)} "
                f"(known: {sorted(VALUE_PLACEHOLDERS)})",
                entry.line,
            )
        value = str(value)
    if isinstance(tag, int) and tag >> 16 & 1:
        raise where.error(f"{context}: private tags are ruled by 'private_tags', not by tag number", entry.line)
    return tag, Rule(code, value)


def _defaults(
    raw: _LineDict, selected: list[_OptionSpec], where: _Where
) -> tuple[Rule, dict[str, Rule], Rule]:
    defaults = raw.get("defaults")
    if not isinstance(defaults, _LineDict):
        raise where.error("'defaults' must be a mapping naming unlisted_public and unknown_public", raw.line_of("defaults"))
    unknown = set(defaults) - _DEFAULT_KEYS
    if unknown:
        raise where.error(f"defaults: unknown keys {sorted(unknown)}", defaults.line_of(sorted(unknown)[0]))
    by_vr = {
        str(vr): _code(code, where, defaults.line, f"defaults.unlisted_by_vr.{vr}")
        for vr, code in (defaults.get("unlisted_by_vr") or {}).items()
    }
    for spec in selected:
        by_vr.update(spec.unlisted_by_vr)
    return (
        Rule(_code(defaults.get("unlisted_public"), where, defaults.line, "defaults.unlisted_public")),
        {vr: Rule(code) for vr, code in by_vr.items()},
        Rule(_code(defaults.get("unknown_public"), where, defaults.line, "defaults.unknown_public")),
    )


def load_profile(path: Path) -> Profile:
    """Read, validate and compile one profile file; ProfileError names what is wrong and where."""
    path = Path(path).resolve()
    where = _Where(path)
    raw = _read_yaml(path)
    unknown = set(raw) - _PROFILE_KEYS
    if unknown:
        raise where.error(f"unknown top-level keys {sorted(unknown)}", raw.line_of(sorted(unknown)[0]))
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise where.error("'name' is required", raw.line_of("name"))
    base = path.parent
    basic_code, specs = _load_option_specs(
        _resolve(base, raw, "option_definitions", where)
    )
    options = _selected_options(raw, specs, where)
    selected = [specs[o] for o in options]
    tables = [_resolve(base, raw, "table", where)]
    if raw.get("table_additions") is not None:
        tables.append(_resolve(base, raw, "table_additions", where))
    exact, masks, private = _load_table(tables, [s.column for s in selected])
    rules = raw.get("rules") or []
    if not isinstance(rules, list):
        raise where.error("'rules' must be a list", raw.line_of("rules"))
    for number, entry in enumerate(rules, start=1):
        tag, rule = _rule_from_entry(entry, number, where)
        (masks if isinstance(tag, TagMask) else exact)[tag] = rule  # type: ignore[index]
    unlisted_public, unlisted_by_vr, unknown_public = _defaults(raw, selected, where)
    max_age = raw.get("max_age_years")
    if max_age is not None and (not isinstance(max_age, int) or max_age < 1):
        raise where.error("'max_age_years' must be a positive whole number", raw.line_of("max_age_years"))
    safe_private = PrivateSafeList.empty()
    if private.code == "C":
        try:
            safe_private = load_private_safe_list(
                _resolve(base, raw, "private_tags", where)
            )
        except PrivateListError as exc:
            raise ProfileError(str(exc)) from exc
    text = TextPolicy()
    if raw.get("free_text") is not None:
        try:
            text = TextPolicy.load(_resolve(base, raw, "free_text", where))
        except ConfigError as exc:
            raise ProfileError(str(exc)) from exc
    return Profile(
        name=name,
        source=path,
        basic_code=basic_code,
        options=options,
        option_codes=tuple(s.code for s in selected),
        exact=MappingProxyType(exact),
        masks=tuple(sorted(masks.items(), key=lambda item: -item[0].specificity)),
        unlisted_public=unlisted_public,
        unlisted_by_vr=MappingProxyType(unlisted_by_vr),
        unknown_public=unknown_public,
        private=private,
        safe_private=safe_private,
        attribute_types=_load_attribute_types(
            _resolve(base, raw, "attribute_types", where)
        ),
        text=text,
        max_age_years=max_age,
    )
