"""The generated policy files are what their converters make from the references today."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from node.deid.private import DELETE, HASH_UID, KEEP, OFFSET_DATE, load_private_safe_list
from tests.deid.samples import CONFIG

SCRIPTS = CONFIG.parent / "scripts"


@pytest.mark.parametrize(
    ("script", "output"),
    [("build_private_tags.py", CONFIG / "private-tags.csv"), ("build_tcia_profile.py", CONFIG / "profiles" / "tcia.yaml")],
)
def test_a_generated_file_matches_its_converter(script: str, output: Path, tmp_path: Path) -> None:
    namespace = runpy.run_path(str(SCRIPTS / script), run_name="converter")
    fresh = tmp_path / output.name
    namespace["main"].__globals__["OUTPUT"] = fresh
    assert namespace["main"]() == 0
    assert fresh.read_text() == output.read_text()


def test_the_safe_list_is_creator_aware_and_knows_every_disposition() -> None:
    safe = load_private_safe_list(CONFIG / "private-tags.csv")
    assert safe.rule(0x0019, "GEMS_ACQU_01", 0x23).disposition == KEEP
    assert safe.rule(0x0019, "gems_acqu_01 ", 0x23).disposition == KEEP  # case and padding
    assert safe.rule(0x0019, "SOME OTHER VENDOR", 0x23).disposition == DELETE
    assert safe.rule(0x0029, "SIEMENS SYNGO ADVANCED PRESENTATION", 0x09).disposition == HASH_UID
    assert safe.rule(0x0019, "GEMS_ACQU_01", 0x9D).disposition == OFFSET_DATE
    assert len(safe) > 4000
