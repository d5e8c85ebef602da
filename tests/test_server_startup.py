"""Start-up failures end in a diagnosis, not a hang."""

from __future__ import annotations

import shutil

import pytest

from bonefrac.errors import ServerError
from bonefrac.server import TritonServer, diagnose, still_loading

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


def test_timeout_names_the_models_still_loading(tmp_path):
    """A model whose initialize outlasts the start-up timeout: the error says which one."""
    model = tmp_path / "repo" / "slow_model"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "slow_model"\nbackend: "python"\nmax_batch_size: 0\n'
        'input { name: "x" data_type: TYPE_FP32 dims: 1 }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: 1 }\n'
        "instance_group { count: 1 kind: KIND_CPU }\n"
    )
    (model / "1" / "model.py").write_text(
        "import time\n\n\nclass TritonPythonModel:\n"
        "    def initialize(self, args):\n        time.sleep(120)\n\n"
        "    def execute(self, requests):\n        return []\n"
    )
    server = TritonServer.ephemeral(tmp_path / "repo", startup_timeout_s=15)
    with pytest.raises(ServerError) as info:
        server.start()
    text = str(info.value)
    assert "not ready after 15 s" in text
    assert "Models not ready yet: slow_model:1." in text, text
    assert server.process is None


def test_still_loading_reads_the_log():
    log = (
        'I1 model_lifecycle.cc:472] "loading: a_pre:1"\n'
        'I1 model_lifecycle.cc:472] "loading: a_det:1"\n'
        'I1 model_lifecycle.cc:472] "loading: b:2"\n'
        "I1 model_lifecycle.cc:839] \"successfully loaded 'a_pre'\"\n"
        "E1 model_lifecycle.cc:642] \"failed to load 'b' version 2: Internal: boom\"\n"
    )
    assert still_loading(log) == ["a_det:1"]
    assert still_loading("") == []
