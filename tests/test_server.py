"""Against a real tritonserver on loopback: served detections equal the in-process reference,
concurrency, and bad input that fails alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from bonefrac.client import (
    AsyncDetectionClient,
    DetectionClient,
    InvalidInputError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from bonefrac.server import free_port

pytestmark = pytest.mark.server

# The bundled models are weak (scores mostly below 0.1): a low threshold gives many boxes
# to compare.
CONF = 0.001


def assert_same(served, expected):
    assert served.image_size == expected.image_size
    assert len(served) == len(expected) > 0
    np.testing.assert_allclose(served.xyxy, expected.xyxy, atol=0.01, rtol=0)
    np.testing.assert_allclose(served.scores, expected.scores, atol=1e-4, rtol=0)
    assert served.class_ids.tolist() == expected.class_ids.tolist()
    assert served.class_names == expected.class_names


@pytest.fixture(scope="module")
def client(triton):
    with DetectionClient(triton.grpc_url, model="yolo11", timeout_s=60) as c:
        yield c


@pytest.fixture(scope="module")
def expected(reference, valid_images):
    return {p: reference.detect(p.read_bytes(), conf_threshold=CONF) for p in valid_images}


def test_served_equals_in_process_reference(client, valid_images, expected):
    for path in valid_images:
        assert_same(client.detect(path.read_bytes(), conf_threshold=CONF), expected[path])


def _first_with_boxes_at_default(pipeline, images) -> bytes:
    """The first image the model finds something on at its own default threshold (the bundled
    models are weak: most images get no box there)."""
    for path in images:
        data = path.read_bytes()
        if len(pipeline.detect(data)):
            return data
    raise AssertionError(f"{pipeline.model} finds no box on any test image at its default")


def test_default_threshold_and_iou_come_from_the_model(client, reference, valid_images):
    spec = reference.spec
    data = _first_with_boxes_at_default(reference, valid_images)
    served = client.detect(data)  # no thresholds sent: the model's defaults apply
    assert_same(served, reference.detect(data))
    assert served.scores.min() >= spec.conf_threshold
    low = client.detect(data, conf_threshold=CONF)
    assert len(low) > len(served) and low.scores.min() < spec.conf_threshold
    assert_same(low, client.detect(data, conf_threshold=CONF, iou_threshold=spec.iou_threshold))
    loose = client.detect(data, conf_threshold=CONF, iou_threshold=0.95)
    tight = client.detect(data, conf_threshold=CONF, iou_threshold=0.3)
    assert len(loose) > len(low) > len(tight) > 0


def test_concurrent_requests_all_succeed(client, valid_images, expected):
    work = valid_images * 3  # 36 requests, 12 in flight: dynamic batching groups them
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda p: client.detect(p.read_bytes(), conf_threshold=CONF), work))
    for path, served in zip(work, results):
        assert_same(served, expected[path])


def test_async_client_with_corrupt_images_in_the_same_batches(triton, valid_images, expected):
    """Bad images sent concurrently with good ones fail alone, with a readable message."""
    corrupt = [b"", b"not an image at all", valid_images[0].read_bytes()[:300]]

    async def main():
        async with AsyncDetectionClient(triton.grpc_url, timeout_s=60) as aclient:
            items = []
            for i, path in enumerate(valid_images):
                items.append(("good", path, path.read_bytes()))
                items.append(("bad", None, corrupt[i % len(corrupt)]))

            async def one(kind, path, data):
                try:
                    return kind, path, await aclient.detect(data, conf_threshold=CONF)
                except Exception as exc:
                    return kind, path, exc

            return await asyncio.gather(*(one(*item) for item in items))

    results = asyncio.run(main())
    for kind, path, result in results:
        if kind == "good":
            assert_same(result, expected[path])
        else:
            assert isinstance(result, InvalidInputError), result
            assert "yolo11_preprocess" in str(result)
    assert triton.is_ready()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"\x00garbage", "not a recognised image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt|not a recognised"),
    ],
)
def test_corrupt_bytes_get_a_clear_error_and_the_server_stays_ready(client, triton, data, message):
    with pytest.raises(InvalidInputError, match=message):
        client.detect(data)
    assert triton.is_ready() and client.is_ready()


def test_bad_threshold_is_refused_by_the_server(triton, valid_images):
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    image = grpcclient.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[valid_images[0].read_bytes()]], dtype=object))
    conf = grpcclient.InferInput("conf_threshold", [1, 1], "FP32")
    conf.set_data_from_numpy(np.array([[7.0]], np.float32))
    with pytest.raises(Exception, match="conf_threshold"):
        raw.infer("yolo11", [image, conf])


def test_two_images_in_one_request_are_padded_per_image(triton, valid_images, expected):
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    pair = valid_images[:2]
    image = grpcclient.InferInput("image", [2, 1], "BYTES")
    image.set_data_from_numpy(np.array([[p.read_bytes()] for p in pair], dtype=object))
    conf = grpcclient.InferInput("conf_threshold", [2, 1], "FP32")
    conf.set_data_from_numpy(np.full((2, 1), CONF, np.float32))
    result = raw.infer("yolo11", [image, conf])
    counts = result.as_numpy("num_detections").reshape(-1).tolist()
    assert counts == [len(expected[p]) for p in pair] and min(counts) > 0
    assert counts[0] != counts[1]  # the shorter answer is padded
    boxes = result.as_numpy("boxes")
    for i, path in enumerate(pair):
        np.testing.assert_allclose(boxes[i, : counts[i]], expected[path].xyxy, atol=0.01)


def test_detector_refuses_wrong_dtype_and_shape(triton):
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    bad = grpcclient.InferInput("images", [1, 3, 64, 64], "FP16")
    bad.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float16))
    with pytest.raises(Exception, match="FP16|data-type|datatype|dtype"):
        raw.infer("yolo11_detector", [bad])
    ok = grpcclient.InferInput("images", [1, 3, 64, 64], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
    out = raw.infer("yolo11_detector", [ok]).as_numpy("output0")
    assert out.shape[:2] == (1, 11)
    assert triton.is_ready()


def test_unknown_model_and_unreachable_server_errors(triton):
    with pytest.raises(ModelNotFoundError, match="nosuchmodel"):
        DetectionClient(triton.grpc_url, model="nosuchmodel").detect(b"x")
    with pytest.raises(ServerUnavailableError, match="unavailable"):
        DetectionClient(f"127.0.0.1:{free_port()}", timeout_s=5).detect(b"x")


def test_infer_cli_served_matches_in_process(triton, repository, valid_images, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in valid_images[:4]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    served_json, local_json = tmp_path / "served.json", tmp_path / "local.json"
    base = [
        sys.executable,
        "-m",
        "bonefrac.cli",
        "infer",
        str(images),
        "--conf",
        str(CONF),
        "--no-progress",
    ]
    served = subprocess.run(
        base + ["--server", triton.grpc_url, "--json", str(served_json)],
        capture_output=True,
        text=True,
    )
    local = subprocess.run(
        base + ["--in-process", "--repository", str(repository), "--json", str(local_json)],
        capture_output=True,
        text=True,
    )
    # One broken file: exit code 1, its error named, the other images done.
    assert served.returncode == 1 and local.returncode == 1, served.stderr + local.stderr
    assert "broken.png" in served.stderr and "not a recognised image" in served.stderr
    a, b = json.loads(served_json.read_text()), json.loads(local_json.read_text())
    assert [r["image"] for r in a] == [r["image"] for r in b] and len(a) == 5
    for ra, rb in zip(a, b):
        if "error" in ra:
            assert "error" in rb
            continue
        assert set(ra) == {"image", "width", "height", "detections"}
        assert (ra["width"], ra["height"]) == (rb["width"], rb["height"])
        assert len(ra["detections"]) == len(rb["detections"]) > 0
        for da, db in zip(ra["detections"], rb["detections"]):
            assert set(da) == {"box", "score", "class_id", "class_name"}
            assert np.allclose(da["box"], db["box"], atol=0.01)
            assert abs(da["score"] - db["score"]) <= 1e-4
            assert da["class_name"] == db["class_name"]


# -- Faster R-CNN: the same ensemble interface, another detector --------------------------------


@pytest.fixture(scope="module")
def frcnn_reference(repository):
    from bonefrac.pipeline import InProcessPipeline

    return InProcessPipeline(repository, "frcnn")


def test_frcnn_served_equals_in_process_reference(triton, frcnn_reference, valid_images):
    with DetectionClient(triton.grpc_url, model="frcnn", timeout_s=60) as frcnn:
        for path in valid_images[:4]:
            data = path.read_bytes()
            assert_same(
                frcnn.detect(data, conf_threshold=CONF),
                frcnn_reference.detect(data, conf_threshold=CONF),
            )
        # Without a threshold both apply the repository's default.
        data = _first_with_boxes_at_default(frcnn_reference, valid_images)
        served = frcnn.detect(data)
        assert_same(served, frcnn_reference.detect(data))
        assert served.scores.min() >= frcnn_reference.spec.conf_threshold


def test_frcnn_blank_tiny_and_stretched_images_do_not_fail(triton, valid_images):
    """Blank images and a tiny one get an answer (boxes inside the image, if any: whether a model
    proposes regions on a black image depends on its weights) instead of an error; an X-ray
    squeezed or stretched to other shapes gets boxes inside the image. The graph's answer to an
    image without region proposals is tested in test_export.py."""
    import cv2

    def png(image: np.ndarray) -> bytes:
        return cv2.imencode(".png", image)[1].tobytes()

    xray = cv2.imdecode(np.frombuffer(valid_images[0].read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)

    def inside(result, shape: tuple[int, int]) -> bool:
        return (
            result.image_size == shape
            and bool(np.all(result.xyxy >= 0))
            and bool(np.all(result.xyxy[:, [0, 2]] <= shape[1]))
            and bool(np.all(result.xyxy[:, [1, 3]] <= shape[0]))
        )

    with DetectionClient(triton.grpc_url, model="frcnn", timeout_s=60) as frcnn:
        for shape in [(300, 300), (8, 8), (2000, 600)]:
            assert inside(frcnn.detect(png(np.zeros(shape, np.uint8)), conf_threshold=0.0), shape)
        assert inside(frcnn.detect(png(cv2.resize(xray, (8, 8))), conf_threshold=0.0), (8, 8))
        for shape in [(300, 300), (2000, 600)]:
            result = frcnn.detect(png(cv2.resize(xray, shape[::-1])), conf_threshold=0.0)
            assert len(result) > 0 and inside(result, shape)


def test_infer_cli_both_models_against_one_server(triton, valid_images, tmp_path):
    for model in ("yolo11", "frcnn"):
        out = tmp_path / f"{model}.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bonefrac.cli",
                "infer",
                str(valid_images[0]),
                "--server",
                triton.grpc_url,
                "--model",
                model,
                "--conf",
                "0.001",
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        records = json.loads(out.read_text())
        assert len(records) == 1 and records[0]["detections"], model
