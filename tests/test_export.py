"""Export: YOLO11 from a config to ONNX with a parity check, into a repository that serves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bonefrac.export.yolo11 import ExportError, export_yolo11
from bonefrac.pipeline import InProcessPipeline
from bonefrac.processing import box_iou
from bonefrac.runtime import OnnxDetector

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def exported(tmp_path_factory, valid_images):
    out = tmp_path_factory.mktemp("repo")
    result = export_yolo11(
        out=out,
        config="yolo11n.yaml",
        class_names=["fracture", "other"],
        imgsz=320,
        name="tiny",
        parity_images=valid_images[:2],
        seed=1,
    )
    return out, result


def test_export_writes_a_complete_repository(exported):
    out, result = exported
    names = {p.relative_to(out).as_posix() for p in result.files}
    assert {
        "tiny/config.pbtxt",
        "tiny_preprocess/1/model.py",
        "tiny_detector/1/model.onnx",
        "tiny_postprocess/config.pbtxt",
    } <= names
    assert (out / "tiny" / "1").is_dir()
    assert result.parity.images == 2
    assert result.parity.max_abs_diff_boxes < 0.05 and result.parity.max_abs_diff_scores < 1e-3


def test_onnx_carries_metadata_and_dynamic_batch(exported):
    _, result = exported
    det = OnnxDetector(result.onnx_path)
    assert det.metadata["bonefrac_class_names"] == '["fracture", "other"]'
    assert det.metadata["bonefrac_imgsz"] == "320"
    out = det.run(np.zeros((3, 3, 320, 320), np.float32))
    assert out.shape == (3, 6, 2100)  # batch 3, 4 + 2 classes, (40^2 + 20^2 + 10^2) anchors


def test_exported_repository_serves_like_in_process(exported, valid_images):
    from bonefrac.client import DetectionClient
    from bonefrac.server import TritonServer

    out, _ = exported
    reference = InProcessPipeline(out, "tiny")
    server = TritonServer.ephemeral(out, startup_timeout_s=300)
    with server, DetectionClient(server.grpc_url, model="tiny") as client:
        for path in valid_images[:3]:
            data = path.read_bytes()
            served = client.detect(data, conf_threshold=0.001)
            local = reference.detect(data, conf_threshold=0.001)
            assert len(served) == len(local) > 0
            np.testing.assert_allclose(served.xyxy, local.xyxy, atol=0.01)
            np.testing.assert_allclose(served.scores, local.scores, atol=1e-4)


def test_missing_weights_fail_clearly_without_download(tmp_path):
    with pytest.raises(ExportError, match="does not exist.*does not download"):
        export_yolo11(out=tmp_path, weights=tmp_path / "yolo11n.pt")


def test_config_without_classes_is_refused(tmp_path):
    with pytest.raises(ExportError, match="--classes"):
        export_yolo11(out=tmp_path, config="yolo11n.yaml")


def test_export_cli_help_and_error():
    helptext = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "export", "yolo11", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--weights" in helptext and "--config" in helptext and "--parity-images" in helptext
    bad = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "export", "yolo11", "--weights", "nowhere.pt"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "does not exist" in bad.stderr


def test_frcnn_export_from_weights_parity_and_new_version(tmp_path, valid_images):
    import torch

    from bonefrac.export.frcnn import build_frcnn, calibrate_batchnorm, export_frcnn
    from bonefrac.processing import preprocess_frcnn
    from bonefrac.spec import FrcnnSpec

    spec = FrcnnSpec(class_names=("fracture",), min_size=256, max_size=320)
    model = build_frcnn(spec, seed=3)
    calibrate_batchnorm(model, [preprocess_frcnn(p.read_bytes())[0] for p in valid_images[:2]])
    weights = tmp_path / "frcnn.pth"
    torch.save({"model": model.state_dict()}, weights)

    kwargs = dict(
        out=tmp_path / "repo",
        class_names=["fracture"],
        weights=weights,
        min_size=256,
        max_size=320,
        parity_images=valid_images[:2],
    )
    first = export_frcnn(**kwargs)
    assert first.version == 1
    assert first.parity.max_abs_diff_boxes < 0.05 and "0 unmatched" in first.parity.note
    assert "FP16-stored weights" in first.parity.note
    second = export_frcnn(**kwargs)
    assert second.version == 2  # re-export adds a version, it does not overwrite
    assert (tmp_path / "repo" / "frcnn_detector" / "1" / "model.onnx").is_file()
    pipeline = InProcessPipeline(tmp_path / "repo", "frcnn")
    assert pipeline.onnx_path == second.onnx_path
    result = pipeline.detect(valid_images[0].read_bytes(), conf_threshold=0.0)
    assert len(result) > 0 and set(result.class_names) == {"fracture"}
    meta = OnnxDetector(second.onnx_path).metadata
    assert meta["bonefrac_family"] == "frcnn" and len(meta["bonefrac_graph_sha256"]) == 64


def test_frcnn_graph_answers_an_image_without_region_proposals(tmp_path, valid_images):
    """When the RPN's proposals are all filtered out (a trained BatchNorm model did that on an
    all-black image), the graph returns no detections: it used to fail in ONNX Runtime on a
    reshape of zero boxes, which also broke the server's warm-up. The weights here make every
    proposal degenerate (zero width and height), so the path is taken whatever model is bundled."""
    import cv2
    import torch

    from bonefrac.export.frcnn import build_frcnn, export_frcnn
    from bonefrac.spec import FrcnnSpec

    spec = FrcnnSpec(class_names=("fracture",), min_size=256, max_size=320)
    model = build_frcnn(spec, seed=3)
    deltas = model.rpn.head.bbox_pred  # per anchor: dx, dy, log dw, log dh
    with torch.no_grad():
        deltas.weight.zero_()
        deltas.bias.zero_()
        deltas.bias[2::4] = deltas.bias[3::4] = -50.0
    weights = tmp_path / "no_proposals.pth"
    torch.save({"model": model.state_dict()}, weights)
    result = export_frcnn(
        out=tmp_path / "repo", class_names=["fracture"], weights=weights, min_size=256, max_size=320
    )
    raw = OnnxDetector(result.onnx_path).run(np.zeros((1, 3, 256, 320), np.float32))
    assert raw.shape == (1, 0, 6)
    pipeline = InProcessPipeline(tmp_path / "repo", "frcnn")
    for image in (np.zeros((600, 800, 3), np.uint8), cv2.imread(str(valid_images[0]))):
        found = pipeline.detect(cv2.imencode(".png", image)[1].tobytes(), conf_threshold=0.0)
        assert len(found) == 0 and found.image_size == image.shape[:2]


def test_frcnn_weights_of_another_shape_are_refused(tmp_path):
    import torch

    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.spec import FrcnnSpec

    weights = tmp_path / "three.pth"
    torch.save(build_frcnn(FrcnnSpec(class_names=("a", "b", "c"))).state_dict(), weights)
    with pytest.raises(ExportError, match="does not fit"):
        build_frcnn(FrcnnSpec(class_names=("a",)), weights=weights)


def test_retarget_to_gpu_profiles_without_torch_export(repository, tmp_path):
    from bonefrac.export.repository import retarget
    from bonefrac.pipeline import read_model_config

    for profile in ("gpu-onnx", "gpu-trt"):
        out = tmp_path / profile
        version, files = retarget(repository, "yolo11", profile=profile, out=out)
        det = read_model_config(out / "yolo11_detector" / "config.pbtxt")
        assert det.platform == {"gpu-onnx": "onnxruntime_onnx", "gpu-trt": "tensorrt_plan"}[profile]
        assert (out / "yolo11_detector" / str(version) / "model.onnx").is_file()
        assert not (out / "yolo11_detector" / str(version) / "model.py").exists()
    script = tmp_path / "gpu-trt" / "yolo11_detector" / "build_engine.sh"
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode != 0  # refuses here: no trtexec, no GPU
    assert "trtexec not found" in result.stderr or "no NVIDIA GPU" in result.stderr


def test_int8_ensemble_next_to_fp32(repository, tmp_path, data_dir, valid_images):
    import shutil

    from bonefrac.export.quantize import STEM_MODULES, quantize_yolo11

    repo = tmp_path / "repo"
    for name in ("yolo11", "yolo11_preprocess", "yolo11_detector", "yolo11_postprocess"):
        shutil.copytree(repository / name, repo / name)
    calibration = sorted((data_dir / "train" / "images").glob("*.jpg"))[::400][:6]
    spec, _ = quantize_yolo11(repository=repo, calibration_images=calibration)
    assert spec.name == "yolo11_int8"
    fp32 = InProcessPipeline(repo, "yolo11")
    int8 = InProcessPipeline(repo, "yolo11_int8")
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 2
    assert int8.class_names == fp32.class_names
    # The INT8 model finds what the FP32 one finds: its 10 best boxes on each image are there
    # (same class, overlapping), with similar scores. The shipped model's scores are low (about
    # 0.005-0.2 on these images), where quantization noise moves boxes and scores most: a box
    # near a tie may lose its match on one CPU and not on another (one of the 40 did, IoU 0, on
    # an AMD EPYC), so the bounds hold for 9 boxes in 10 and tightly on the median (a broken
    # quantization, e.g. of the Detect head, gives IoU near 0 for most boxes). Its AP on valid
    # is in its model card (docs/MODELS.md).
    ious, score_diffs = [], []
    for path in valid_images[:4]:
        data = path.read_bytes()
        a, b = fp32.detect(data, conf_threshold=0.001), int8.detect(data, conf_threshold=0.001)
        assert a.image_size == b.image_size and len(a) >= 10 and len(b) > 0
        for i in np.argsort(-a.scores)[:10]:
            same = np.flatnonzero(b.class_ids == a.class_ids[i])
            overlap = box_iou(a.xyxy[i], b.xyxy[same]) if same.size else np.zeros(1)
            ious.append(float(overlap.max()))
            if overlap.max() >= 0.5:  # a score difference means something for the same box only
                score_diffs.append(abs(float(a.scores[i] - b.scores[same[np.argmax(overlap)]])))
    print(
        f"INT8 vs FP32, 10 best boxes of 4 images: IoU min {min(ious):.3f} (below 0.25: "
        f"{sum(i < 0.25 for i in ious)} of {len(ious)}), 10 % quantile "
        f"{np.quantile(ious, 0.1):.3f}, median "
        f"{np.median(ious):.3f}, score difference max {max(score_diffs):.4f} median "
        f"{np.median(score_diffs):.4f}"
    )
    assert np.quantile(ious, 0.1) >= 0.25 and np.median(ious) >= 0.75
    assert len(score_diffs) >= len(ious) // 2
    assert max(score_diffs) <= 0.2 and np.median(score_diffs) <= 0.05
    # The stem and the Detect head stay FP32 (their weights float initializers); the others'
    # weights are 7-bit (x86 without VNNI saturates on full-range INT8 weights).
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8.onnx_path)).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = {n.name: n.input[1] for n in graph.node if n.op_type == "Conv"}
    last = max(
        int(name.split("/")[1].split(".")[1]) for name in convs if name.startswith("/model.")
    )
    kept_prefixes = tuple(f"/model.{i}/" for i in (*STEM_MODULES, last))
    kept = [name for name in convs if name.startswith(kept_prefixes)]
    assert kept and all(convs[name] in floats for name in kept)
    quantized = [name for name in convs if name not in kept]
    assert quantized and not any(convs[name] in floats for name in quantized)
    int8_weights = [
        numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8
    ]
    assert int8_weights and max(int(np.abs(w).max()) for w in int8_weights) <= 64
    with pytest.raises(ExportError, match="calibration"):
        quantize_yolo11(repository=repo, calibration_images=[])
