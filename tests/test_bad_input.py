"""Every input of the bad-input corpus gets a valid result or a clear per-request error, while a
background load of good requests runs without a single failure; then wrong tensors sent to each
model directly."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from bonefrac.benchmarks.bad_inputs import BackgroundLoad, corpus, send_corpus
from bonefrac.client import DetectionClient, InvalidInputError

pytestmark = pytest.mark.server


@pytest.mark.parametrize("model", ["yolo11", "frcnn"])
def test_bad_input_corpus_under_load(triton, valid_images, model):
    items = corpus(valid_images[0])
    assert len(items) >= 30
    with (
        BackgroundLoad(triton.grpc_url, valid_images[1].read_bytes(), model) as load,
        DetectionClient(triton.grpc_url, model=model, timeout_s=60) as client,
    ):
        outcomes = send_corpus(client, items)
    assert [o.name for o in outcomes] == list(items)
    for o in outcomes:
        assert o.outcome in ("ok", "error"), (o.name, o.message)  # nothing but InvalidInputError
        if o.outcome == "ok":
            assert o.image_size[0] >= 1 and o.image_size[1] >= 1, o.name
        else:
            assert "internal error" not in o.message, (o.name, o.message)
            assert len(o.message) > 20, (o.name, o.message)
        if o.expected != "ok_or_error":
            assert o.outcome == o.expected, (o.name, o.outcome)
    assert not load.failures, load.failures[:3]
    assert load.ok > 0
    assert triton.is_ready()


def _raw_infer(url, model, name, array, dtype):
    raw = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return raw.infer(model, [tensor])


@pytest.mark.parametrize(
    ("model", "name", "array", "dtype", "message"),
    [
        ("yolo11_detector", "images", np.zeros((1, 4, 64, 64), np.float32), "FP32", "shape|dims"),
        ("yolo11_detector", "images", np.full((1, 3, 64, 64), np.nan, np.float32), "FP32", "NaN"),
        ("yolo11_detector", "images", np.zeros((1, 3, 64), np.float32), "FP32", "shape|dims"),
        ("frcnn_detector", "images", np.zeros((1, 3, 64, 64), np.float16), "FP16", "FP16|type"),
        ("yolo11_preprocess", "image", np.zeros((1, 1), np.int32), "INT32", "TYPE_STRING|type"),
        ("yolo11", "image", np.array([[b"x"] * 9] * 9, dtype=object), "BYTES", "shape|dims|batch"),
    ],
)
def test_wrong_tensors_to_each_model(triton, model, name, array, dtype, message):
    with pytest.raises(InferenceServerException, match=message):
        _raw_infer(triton.grpc_url, model, name, array, dtype)
    assert triton.is_ready()


def test_postprocess_refuses_a_bad_transform(triton):
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    out0 = grpcclient.InferInput("output0", [1, 11, 10], "FP32")
    out0.set_data_from_numpy(np.zeros((1, 11, 10), np.float32))
    box = grpcclient.InferInput("letterbox", [1, 6], "FP32")
    box.set_data_from_numpy(np.zeros((1, 6), np.float32))
    with pytest.raises(InferenceServerException, match="positive gains"):
        raw.infer("yolo11_postprocess", [out0, box])


def test_oversize_message_gets_a_clear_error(triton):
    client = DetectionClient(triton.grpc_url, model="yolo11", timeout_s=120)
    with pytest.raises(InvalidInputError, match="not a recognised image"):
        client.detect(np.random.default_rng(1).bytes(100 << 20))  # 100 MB of noise
    assert triton.is_ready()


def test_non_utf8_file_names_through_the_cli(triton, valid_images, tmp_path):
    import json
    import os
    import subprocess
    import sys

    folder = tmp_path / "xrays"
    folder.mkdir()
    name = os.fsdecode(b"r\xf6ntgen \xff.jpg")  # Latin-1 bytes: not valid UTF-8
    (folder / name).write_bytes(valid_images[0].read_bytes())
    out = tmp_path / "out.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonefrac.cli",
            "infer",
            str(folder),
            "--server",
            triton.grpc_url,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert len(records) == 1 and "detections" in records[0]
