"""Start-up failures end in a diagnosis, not a hang."""

from __future__ import annotations

import shutil

import pytest

from bonefrac.errors import ServerError
from bonefrac.server import TritonServer, diagnose

pytestmark = pytest.mark.server


def test_missing_artifact_fails_fast_with_diagnosis(repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repository, broken)
    (broken / "yolo11_detector" / "1" / "model.onnx").unlink()
    server = TritonServer.ephemeral(broken, startup_timeout_s=300)
    with pytest.raises(ServerError) as info:
        server.start()
    text = str(info.value)
    assert "yolo11_detector" in text and "model.onnx" in text and "Diagnosis" in text
    assert server.process is None  # stopped, not left running


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(ServerError, match="does not exist"):
        TritonServer(tmp_path / "nowhere").start()


def test_diagnosis_names_known_causes():
    assert "stub" in diagnose("triton_python_backend_stub is not found")
    assert "LD_LIBRARY_PATH" in diagnose(
        "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'"
    )
    assert "environment" in diagnose("ModuleNotFoundError: No module named 'bonefrac'")
