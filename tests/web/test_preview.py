"""`deid-node preview`: a dry run writes a report of what would leave (masked frames with the
boxes outlined, the de-identified header) and records nothing in the mapping store."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from node.cli import cli
from node.config import load_settings
from node.factory import Node
from node.persist.models import AuditEvent, Job, Patient, UidMapping
from tests.web.phi import leaks, phi_strings, write_burned_in, write_cts


def test_preview_masks_burned_in_text_and_records_nothing(node_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = node_config()
    node = Node(load_settings(config))
    node.upgrade_database()
    burned, mask = write_burned_in(tmp_path / "in" / "burned.dcm")
    ct = write_cts(tmp_path / "in", 1)[0]
    output = tmp_path / "report"

    result = CliRunner().invoke(cli, ["--config", str(config), "preview", str(burned), str(ct), "-o", str(output)])

    assert result.exit_code == 0, result.output
    report = json.loads((output / "instance-0001" / "report.json").read_text())
    assert report["error"] is None and report["masked"]
    picture = np.asarray(Image.open(output / "instance-0001" / "frame-0000.png").convert("RGB"))
    assert picture.shape[:2] == mask.shape
    assert not (picture[mask].min(axis=1) > 200).any(), "a burned-in text pixel is still white"
    covered = np.zeros_like(mask)
    for box in report["masked"]:
        covered[box["y"]:box["y"] + box["h"], box["x"]:box["x"] + box["w"]] = True
    assert covered[mask].all(), "text outside every reported box"
    actions = {a["path"].split(" ", 1)[1]: a for a in report["attributes"]}
    assert actions["PatientName"]["action"] == "changed"
    assert actions["PatientName"]["value"] == report["patient_pseudonym"]
    assert json.loads((output / "instance-0002" / "report.json").read_text())["frames"][0]["rows"] == 128
    with node.sessions() as session:
        for table in (Patient, UidMapping, Job, AuditEvent):
            assert session.scalar(select(func.count()).select_from(table)) == 0, table.__tablename__
    phi = phi_strings([burned, ct])
    for path in [*output.rglob("*.json"), *output.rglob("*.html")]:
        assert not leaks(path.read_text(), phi), path
    assert not leaks(result.output, phi)
