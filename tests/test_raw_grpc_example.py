"""The README's raw gRPC contract, tried as a new user would: plain tritonclient, no bonefrac
import (docs/examples/plain_tritonclient.py), against a real tritonserver."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc

from bonefrac.client import DetectionClient

from .conftest import ROOT

pytestmark = pytest.mark.server

EXAMPLE = ROOT / "docs" / "examples" / "plain_tritonclient.py"

#: Runs the example as a script with bonefrac unimportable: it must need nothing of ours.
WITHOUT_BONEFRAC = (
    "import runpy, sys\n"
    "sys.modules['bonefrac'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _example(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_BONEFRAC, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("model", ["yolo11", "frcnn"])
def test_plain_tritonclient_example_gets_what_the_bonefrac_client_gets(triton, valid_images, model):
    path = valid_images[0]
    result = _example(str(path), "--server", triton.grpc_url, "--model", model, "--conf", "0.001")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    with DetectionClient(triton.grpc_url, model=model, timeout_s=60) as client:
        expected = client.detect(path.read_bytes(), conf_threshold=0.001)
    assert len(answer["detections"]) == len(expected) > 0
    assert tuple(answer["image_size"]) == expected.image_size
    boxes = np.array([d["box"] for d in answer["detections"]])
    np.testing.assert_allclose(boxes, expected.xyxy, atol=0.01)
    scores = [d["score"] for d in answer["detections"]]
    np.testing.assert_allclose(scores, expected.scores, atol=1e-5)
    assert [d["class_name"] for d in answer["detections"]] == list(expected.class_names)
    assert [d["class_id"] for d in answer["detections"]] == expected.class_ids.tolist()


def test_example_reports_a_server_error_readably(triton, valid_images):
    result = _example(str(valid_images[0]), "--server", triton.grpc_url, "--model", "nosuch")
    assert result.returncode == 1 and "nosuch" in result.stderr, result.stderr


def test_an_image_without_the_batch_dimension_is_refused_as_the_readme_says(triton, valid_images):
    readme = (ROOT / "README.md").read_text()
    assert 'InferInput("image", [1, 1], "BYTES")' in readme
    assert 'a shape of `[1]` is refused with INVALID_ARGUMENT "expected [-1,1]"' in readme
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    image = grpcclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([valid_images[0].read_bytes()], dtype=np.object_))
    with pytest.raises(grpcclient.InferenceServerException) as info:
        raw.infer("yolo11", [image])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected [-1,1]" in info.value.message().lower()


_TYPES = {"TYPE_STRING": "BYTES", "TYPE_FP32": "FP32", "TYPE_INT32": "INT32"}


def _readme_tensors() -> dict[str, tuple[str, str]]:
    """``name -> (type, shape)`` from the README's table of the ensemble's tensors."""
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (?:in|out) `(\w+)`[^|]*\| (\w+) \| `(\[[^`]+\])` \|", readme, re.M)
    return {name: (dtype, shape) for name, dtype, shape in rows}


@pytest.mark.parametrize("model", ["yolo11", "frcnn", "yolo11_int8"])
def test_readme_table_is_the_served_ensemble_interface(triton, model):
    config = grpcclient.InferenceServerClient(triton.grpc_url).get_model_config(model).config
    assert config.max_batch_size > 0  # hence the batch dimension B in front of every tensor
    served = {
        t.name: (
            _TYPES[mc.DataType.Name(t.data_type)],
            "[" + ", ".join(["B"] + ["N" if d == -1 else str(d) for d in t.dims]) + "]",
        )
        for t in [*config.input, *config.output]
    }
    assert _readme_tensors() == served
