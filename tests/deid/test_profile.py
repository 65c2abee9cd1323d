"""Profiles load from data, and a malformed one stops start-up naming the file, line and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.deid.profile import ProfileError, load_profile
from tests.deid.samples import PROFILES, profile_variant


def _variant(tmp_path: Path, replace: str, by: str) -> Path:
    return profile_variant(tmp_path, {replace: by})


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if needle in line)


def test_an_unknown_action_names_file_line_and_rule(tmp_path: Path) -> None:
    path = _variant(tmp_path, "{tag: SOPClassUID, action: K}", "{tag: SOPClassUID, action: Q}")
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert f"{path}:{_line_of(path, 'action: Q')}:" in message
    assert "'SOPClassUID'" in message and "'Q'" in message


def test_an_unknown_tag_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "{tag: SOPClassUID,", "{tag: SOPClassUUID,")
    with pytest.raises(ProfileError, match=r"variant\.yaml:\d+: rule \d+ \('SOPClassUUID'\)"):
        load_profile(path)


def test_an_unknown_option_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "options: []", "options: [retain_everything]")
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert f"{path}:{_line_of(path, 'retain_everything')}: unknown option 'retain_everything'" in str(error.value)


def test_a_missing_table_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "ps3.15-table-e.1-1.json", "no-such-table.json")
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert f"{path}:{_line_of(path, 'no-such-table')}: 'table': file not found" in str(error.value)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = _variant(tmp_path, "options: []", "options: [unclosed")
    with pytest.raises(ProfileError, match=r"variant\.yaml:\d+: not valid YAML"):
        load_profile(path)


def test_the_basic_profile_compiles_every_table_row() -> None:
    profile = load_profile(PROFILES / "basic.yaml")
    assert len(profile.exact) >= 617
    assert profile.private.code == "X"
    assert profile.rule_for(0x50001234).code == profile.rule_for(0x50223000).code == "X"  # (50xx,xxxx)
    assert profile.rule_for(0x60220010).code == "X"  # (60xx,xxxx): overlays go whole
