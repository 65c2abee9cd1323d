"""The policy file decides the treatment; the region library is the CTP script, converted."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file

from node.deid.pixels.ctp_regions import convert
from node.deid.pixels.policy import Action, MaskScope, load_policy
from node.deid.pixels.regions import load_region_rules, matching_boxes
from tests.deid.pixels.conftest import POLICY

CONFIG = POLICY.parent


def _dataset(**attributes: object) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_every_image_is_looked_at_by_default() -> None:
    decision = load_policy(POLICY).decide(_dataset(Modality="CT"))
    assert (decision.action, decision.mask) == (Action.DETECT, MaskScope.DENY)  # deny by default (issue 14)


def test_burned_in_annotation_yes_always_means_ocr_even_where_a_rule_skips() -> None:
    policy = load_policy(POLICY)
    assert policy.decide(_dataset(Modality="SEG")).action is Action.SKIP
    assert policy.decide(_dataset(Modality="SEG", BurnedInAnnotation="YES")).action is Action.OCR


def test_rules_match_by_signature_and_first_match_wins(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "rules": [
            {"name": "logiq", "when": {"manufacturer_contains": ["G.E."], "model_contains": ["LOGIQ"], "rows": 480},
             "action": "ocr", "mask": "all_text"},
            {"name": "all-us", "when": {"modality": ["US"]}, "action": "skip"},
        ]
    }))
    policy = load_policy(path)
    us1 = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"), stop_before_pixels=True)
    assert policy.decide(us1).rule == "logiq"
    assert policy.decide(us1).mask is MaskScope.ALL_TEXT
    us1.Rows = 600
    assert policy.decide(us1).rule == "all-us"


def test_region_library_is_the_ctp_script_converted() -> None:
    """The shipped YAML is what the converter makes of the reference script: reproducible."""
    converted = convert((CONFIG / "reference" / "ctp-burned-in-regions.script").read_text())
    shipped = yaml.safe_load((CONFIG / "burned-in-regions.yaml").read_text())["rules"]
    assert converted == shipped
    assert len(shipped) == (CONFIG / "reference" / "ctp-burned-in-regions.script").read_text().count("{")


def test_region_rule_matches_device_signature() -> None:
    rules = load_region_rules(CONFIG / "burned-in-regions.yaml")
    philips = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"), stop_before_pixels=True)
    names, boxes = matching_boxes(rules, philips)
    assert names == ["US / Philips / CX50"] and boxes == [(0, 0, 800, 59)]
    philips.Rows = 480
    assert matching_boxes(rules, philips) == ([], [])


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"Manufacturer": "Philips", "SeriesDescription": "FFR run", "Rows": 1024, "Columns": 1280},
         "US / Philips  31-03-2023"),
        ({"Manufacturer": "VITAL Images", "SeriesDescription": "AAA sizing", "Rows": 1041},
         "CT / VITREA / Stent Planning Worksheet"),
        ({"Manufacturer": "VITAL Images", "SeriesDescription": "Report", "Rows": 1041},
         "CT / VITREA / Stent Planning Worksheet"),
    ],
)
def test_ctp_and_or_conditions_survive_conversion(attributes: dict[str, object], expected: str) -> None:
    rules = load_region_rules(CONFIG / "burned-in-regions.yaml")
    names, _ = matching_boxes(rules, _dataset(**attributes))
    assert names == [expected]


def test_unreadable_text_masking_is_off_unless_the_policy_sets_a_height(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("masking: {margin_fraction: 0.2}\n")
    assert load_policy(path).settings.masking.unreadable_height == 0
    assert load_policy(POLICY).settings.masking.unreadable_height > 0
