"""The anchors ``make bench`` measures the server against, in miniature (no timing asserts):
Ultralytics' Triton-guide layout against our detector, the in-process pipeline on several
sessions and threads, and torchvision's Faster R-CNN in PyTorch with the served weights (whose
recovery from the ONNX graph is checked against ONNX Runtime on real X-rays)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.export]


def _step(target, valid_images, concurrency: int):
    from bonefrac.benchmarks import loadgen

    payloads = [p.read_bytes() for p in valid_images[:4]]
    return asyncio.run(
        loadgen.run_step(
            target,
            payloads,
            name="anchor",
            concurrency=concurrency,
            warmup_s=0.2,
            window_s=1.0,
            max_windows=1,
        )
    )


@pytest.mark.server
def test_ultralytics_guide_layout_runs_against_our_detector(
    triton, repository, valid_images, monkeypatch
):
    """Several client threads, one YOLO('grpc://...') each, against the served detector: every
    request answered, each one image of the spec's size in FP32 (the client pads a request up
    to the metadata's batch with zero images: it must say 1)."""
    from ultralytics.utils.triton import TritonRemoteModel

    from bonefrac.benchmarks import loadgen
    from bonefrac.pipeline import read_repository_model

    sent = []
    call = TritonRemoteModel.__call__

    def recording(self, *inputs):
        sent.append((tuple(inputs[0].shape), str(inputs[0].dtype)))
        return call(self, *inputs)

    spec = read_repository_model(repository, "yolo11").spec
    monkeypatch.setattr(TritonRemoteModel, "__call__", recording)
    target = loadgen.ultralytics_triton_target(triton.grpc_url, spec.detector, threads=2)
    step = _step(target, valid_images, 2)
    assert step.requests > 0 and step.errors == 0, step.error_samples
    assert set(sent) == {((1, 3, spec.imgsz, spec.imgsz), "float32")}


def test_in_process_sessions_on_threads(repository, valid_images):
    from bonefrac.benchmarks import loadgen

    target = loadgen.in_process_target(str(repository), "yolo11", sessions=2, threads=1)
    step = _step(target, valid_images, 3)
    assert step.requests > 0 and step.errors == 0, step.error_samples


@pytest.fixture(scope="module")
def recovered(repository):
    from bonefrac.benchmarks.torch_baseline import frcnn_from_onnx

    return frcnn_from_onnx(repository, "frcnn")


def test_torchvision_frcnn_recovered_from_onnx_matches_onnx_runtime(
    repository, valid_images, recovered
):
    """The PyTorch model rebuilt from the served graph's weights gives ONNX Runtime's boxes and
    scores on real X-rays (every detection matched, same counts)."""
    from bonefrac.benchmarks.torch_baseline import check_frcnn_parity
    from bonefrac.pipeline import InProcessPipeline

    images = valid_images[:4]
    served = InProcessPipeline(repository, "frcnn")
    assert sum(len(served.detect(p.read_bytes(), conf_threshold=0.001)) for p in images) > 0
    report = check_frcnn_parity(repository, images, torch_model=recovered)
    assert report.max_abs_diff_boxes <= 0.05, str(report)
    assert report.max_abs_diff_scores <= 1e-4, str(report)


def test_torchvision_target_runs(repository, valid_images, recovered):
    from bonefrac.benchmarks.torch_baseline import torchvision_target

    target = torchvision_target(str(repository), "frcnn", threads=2, torch_model=recovered)
    step = _step(target, valid_images, 2)
    assert step.requests > 0 and step.errors == 0, step.error_samples
