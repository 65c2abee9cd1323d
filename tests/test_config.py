"""Routes in node.yaml: a config without routes is the route `default`; cross-references are
checked at load with a ConfigError naming the file and the field; first match wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from node.config import ConfigError, load_settings
from tests.nodeproc import write_config

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def _routes(tmp_path: Path, routes: list[dict[str, Any]], **overrides: Any) -> Path:
    return write_config(tmp_path, port=11112, routes=routes, destinations={
        "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242},
        "folder": {"kind": "folder", "path": "outbox"}}, **overrides)


def test_a_config_without_routes_is_one_route_named_default(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, port=11112, dest_port=4242))
    [route] = settings.routes
    assert (route.name, route.project, route.destinations) == ("default", "default", ("default",))
    assert route.calling_ae_titles == ("MODALITY", "STORESCU", "ECHOSCU")
    assert route.profile == settings.deid.profile and route.pixel_policy == settings.pixels.policy
    assert settings.destinations["default"] == settings.forward.destination


def test_routes_choose_by_caller_then_by_what_the_dataset_says(tmp_path: Path) -> None:
    settings = load_settings(_routes(tmp_path, [
        {"name": "mr-only", "calling_ae_titles": ["SCANNER"], "modalities": ["MR"], "profile": "basic.yaml",
         "project": "mri", "destinations": ["pacs"]},
        {"name": "scanner", "calling_ae_titles": ["SCANNER"], "hosts": ["10.0.0.5"], "profile": "tcia.yaml",
         "destinations": ["pacs", "folder"]},
        {"name": "teaching", "calling_ae_titles": ["TEACHING"], "called_ae_title": "DEID_TEACH",
         "profile": "basic.yaml", "destinations": ["folder"]},
    ]))
    assert settings.first_route("SCANNER", "DEID_NODE", "10.0.0.5", ("MR", MR)).name == "mr-only"
    assert settings.first_route("SCANNER", "DEID_NODE", "10.0.0.5", ("CT", CT)).name == "scanner"
    assert settings.first_route("SCANNER", "DEID_NODE", "10.0.0.9", ("CT", CT)) is None
    assert settings.first_route("TEACHING", "DEID_TEACH", None, ("CT", CT)).name == "teaching"
    assert settings.first_route("TEACHING", "DEID_NODE", None, ("CT", CT)) is None
    assert settings.first_route("STRANGER", None, None) is None
    callers = {c.ae_title: c.hosts for c in settings.receive.allowed_callers}
    assert callers == {"SCANNER": (), "TEACHING": ()}  # one route of SCANNER takes any address
    assert settings.destinations["folder"].path == tmp_path / "outbox"  # resolved against the file
    assert settings.routed_destinations == ["pacs", "folder"]


@pytest.mark.parametrize(("routes", "extra", "field"), [
    ([{"name": "a", "profile": "tcia.yaml", "destinations": ["nowhere"]}], {}, "routes.0.destinations"),
    ([{"name": "a", "profile": "tcia.yaml", "destinations": ["pacs"]},
      {"name": "a", "profile": "basic.yaml", "destinations": ["folder"]}], {}, "routes.1.name"),
    ([{"name": "a", "profile": "tcia.yaml", "destinations": ["pacs"]}],
     {"receive": {"allowed_callers": [{"ae_title": "X"}]}}, "receive.allowed_callers"),
    ([{"name": "a", "profile": "tcia.yaml", "destinations": []}], {}, "routes.0.destinations"),
])
def test_a_broken_cross_reference_names_the_file_and_the_field(tmp_path: Path, routes: list[dict[str, Any]],
                                                               extra: dict[str, Any], field: str) -> None:
    path = _routes(tmp_path, routes, **extra)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(path) in str(raised.value) and field in str(raised.value)


def test_the_shipped_config_delivers_to_a_folder_under_var() -> None:
    settings = load_settings(Path(__file__).resolve().parent.parent / "config" / "node.yaml")
    [route] = settings.routes
    [folder] = [settings.destinations[name] for name in route.destinations]
    assert folder.kind == "folder" and folder.path.parent.name == "var"
    assert yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "node.yaml").read_text())["routes"]
