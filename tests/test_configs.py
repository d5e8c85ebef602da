"""The generated Triton configs: they parse with Triton's own schema for every profile, the
committed repository is what its spec generates, and every ensemble is wired consistently."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bonefrac.export.repository import engine_script, entry_point, entry_points
from bonefrac.export.triton_config import PROFILES, model_configs, single_model, to_pbtxt
from bonefrac.pipeline import read_repository_model
from bonefrac.runtime import file_sha256
from bonefrac.spec import BatchingSpec, FrcnnSpec, Yolo11Spec, spec_from_json

SPECS = [
    Yolo11Spec(),
    FrcnnSpec(),
    FrcnnSpec(arch="r50_fpn_v2", name="frcnn_r50", min_size=800, max_size=1333),
]


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_profile_parses_with_triton_schema_and_is_wired(spec, profile):
    configs = model_configs(spec, profile=profile)
    for config in configs.values():
        assert _parse(to_pbtxt(config)) == config
    if single_model(spec, profile):
        assert configs[spec.name].backend == "python"
        _wiring(model_configs(_layout(spec, "ensemble"), profile=profile), spec.name)
    else:
        _wiring(configs, spec.name)
    det = configs[spec.detector]
    if profile == "cpu":
        assert det.backend == "python"
        assert det.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    else:
        assert det.platform == {"gpu-onnx": "onnxruntime_onnx", "gpu-trt": "tensorrt_plan"}[profile]
        assert det.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    if profile == "gpu-onnx":
        acc = det.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert det.model_warmup[0].inputs  # warm-up on every profile
    for name in (spec.preprocess, spec.postprocess):
        assert configs[name].backend == "python"
    assert spec_from_json(configs[spec.name].parameters["spec"].string_value) == spec


def _layout(spec, layout: str):
    return dataclasses.replace(spec, batching=dataclasses.replace(spec.batching, cpu_layout=layout))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_single_layout_serves_the_ensembles_interface(spec):
    """On the cpu profile the one model takes and returns what the ensemble does, carries the
    parameters clients read, and batches like the detector; the step models are the same in
    both layouts; GPU profiles keep the ensemble whatever the layout."""
    single = model_configs(_layout(spec, "single"))
    ensemble = model_configs(_layout(spec, "ensemble"))
    fused, ens, det = single[spec.name], ensemble[spec.name], single[spec.detector]
    assert ens.platform == "ensemble" and fused.backend == "python" and not fused.platform
    assert list(fused.input) == list(ens.input) and list(fused.output) == list(ens.output)
    assert fused.max_batch_size == ens.max_batch_size
    for key in ("pipeline", "class_names", "model_sha256", "profile"):
        assert fused.parameters[key] == ens.parameters[key]
    assert spec_from_json(fused.parameters["spec"].string_value).batching.cpu_layout == "single"
    assert fused.dynamic_batching == det.dynamic_batching
    assert fused.instance_group[0].count == spec.batching.detector_instances
    assert fused.parameters["intra_op_threads"] == det.parameters["intra_op_threads"]
    assert set(single) == set(ensemble)
    for name in (spec.preprocess, spec.postprocess):
        assert single[name].input == ensemble[name].input
    assert entry_points(_layout(spec, "single"))[spec.name] == "fused"
    assert spec.name not in entry_points(_layout(spec, "ensemble"))
    for profile in ("gpu-onnx", "gpu-trt"):
        assert model_configs(_layout(spec, "single"), profile=profile)[spec.name].platform == (
            "ensemble"
        )
        assert spec.name not in entry_points(_layout(spec, "single"), profile=profile)
    with pytest.raises(ValueError, match="unknown cpu_layout"):
        BatchingSpec(cpu_layout="fused")


def test_committed_repository_is_what_its_spec_generates(repository):
    for name in ("yolo11", "yolo11_int8", "frcnn"):
        found = read_repository_model(repository, name)
        assert found.spec.model_sha256 == file_sha256(found.onnx_path), f"{name}: stale hash"
        for model, config in model_configs(found.spec).items():
            committed = (repository / model / "config.pbtxt").read_text()
            assert committed == to_pbtxt(config), f"{model}/config.pbtxt differs from its spec"
        for model, module in entry_points(found.spec).items():
            versions = sorted(p for p in (repository / model).iterdir() if p.name.isdigit())
            assert (versions[-1] / "model.py").read_text() == entry_point(module)


def test_entry_points_name_existing_modules():
    import importlib.util

    for spec in SPECS:
        for module in set(entry_points(spec).values()):
            assert importlib.util.find_spec(f"bonefrac.triton_models.{module}") is not None


def test_yolo_detector_carries_ultralytics_metadata():
    import ast

    det = model_configs(Yolo11Spec(imgsz=320))["yolo11_detector"]
    meta = ast.literal_eval(det.parameters["metadata"].string_value)
    assert meta["imgsz"] == [320, 320] and meta["names"][0] == "elbow positive"
    assert meta["task"] == "detect" and meta["args"]["dynamic"] is False
    assert meta["batch"] == 1  # Ultralytics pads each request up to it with zero images
    assert det.input[0].name == "images" and det.output[0].name == "output0"


def test_engine_script_uses_spec_shapes():
    text = engine_script(Yolo11Spec(), version=3)
    assert "3/model.onnx" in text and "3/model.plan" in text and "--fp16" in text
    assert f"--maxShapes=images:{Yolo11Spec().batching.max_batch_size}x3x640x640" in text
    assert "--minShapes=images:1x3x256x256" in engine_script(FrcnnSpec(), version=1)


def _wiring(configs: dict[str, mc.ModelConfig], ensemble: str):
    """Check every ensemble tensor: produced once, consumed with matching dtype and dims."""
    ens = configs[ensemble]
    produced = {t.name: (t.data_type, list(t.dims)) for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert model.max_batch_size >= ens.max_batch_size
        inputs = {t.name: t for t in model.input}
        for model_input, tensor in step.input_map.items():
            assert model_input in inputs, f"{step.model_name} has no input {model_input}"
            assert tensor in produced, f"{tensor} is consumed before it is produced"
            dtype, dims = produced[tensor]
            spec = inputs[model_input]
            assert dtype == spec.data_type, f"{tensor}: dtype mismatch into {step.model_name}"
            assert len(dims) == len(spec.dims) and all(
                a == b or -1 in (a, b) for a, b in zip(dims, spec.dims)
            ), f"{tensor}: dims {dims} do not fit {list(spec.dims)} of {step.model_name}"
        required = {t.name for t in model.input if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses required inputs"
        outputs = {t.name: t for t in model.output}
        for model_output, tensor in step.output_map.items():
            assert tensor not in produced, f"{tensor} is produced twice"
            produced[tensor] = (outputs[model_output].data_type, list(outputs[model_output].dims))
    for out in ens.output:
        assert produced[out.name] == (out.data_type, list(out.dims))


def test_detector_rows_follow_class_count():
    spec = _layout(Yolo11Spec(class_names=("a", "b"), name="tiny"), "ensemble")
    configs = model_configs(spec)
    assert list(configs["tiny_detector"].output[0].dims) == [6, -1]
    _wiring(configs, "tiny")


def test_spec_refuses_bad_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        Yolo11Spec(imgsz=100)
    with pytest.raises(ValueError, match="preferred batch sizes"):
        BatchingSpec(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="unknown profile"):
        model_configs(Yolo11Spec(), profile="tpu")
    with pytest.raises(ValueError, match="unknown arch"):
        FrcnnSpec(arch="vgg")
    with pytest.raises(ValueError, match="unknown model family"):
        spec_from_json('{"family": "detr"}')


def test_default_threshold_is_set_from_an_eval_report(repository, tmp_path, valid_images):
    """bonefrac export threshold rewrites the ensemble's default; requests without a threshold
    then get it, and the ONNX file (and so its hash) is untouched."""
    import json
    import shutil
    import subprocess
    import sys

    from bonefrac.pipeline import InProcessPipeline

    repo = tmp_path / "repo"
    for step in ("yolo11", "yolo11_preprocess", "yolo11_detector", "yolo11_postprocess"):
        shutil.copytree(repository / step, repo / step)
    report = tmp_path / "eval.json"
    report.write_text(
        json.dumps([{"model": {"name": "yolo11"}, "froc_thresholds": {"1": 0.0123, "8": None}}])
    )

    def threshold(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bonefrac.cli", "export", "threshold"]
            + ["--repository", str(repo), "--model", "yolo11", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    before = read_repository_model(repo, "yolo11")
    done = threshold("--from-eval", str(report))
    assert done.returncode == 0, done.stderr
    after = read_repository_model(repo, "yolo11")
    assert after.spec.conf_threshold == 0.0123
    assert after.spec.model_sha256 == before.spec.model_sha256
    # Requests without a threshold now get 0.0123: exactly what asking for it gives, and more
    # boxes than the committed default (higher) gave.
    pipeline = InProcessPipeline(repo, "yolo11")
    images = [p.read_bytes() for p in valid_images]
    now = [pipeline.detect(data) for data in images]
    assert sum(map(len, now)) > 0
    for data, found in zip(images, now):
        asked = pipeline.detect(data, conf_threshold=0.0123)
        assert found.scores.tolist() == asked.scores.tolist()
        assert all(s >= 0.0123 for s in found.scores)
    committed = InProcessPipeline(repository, "yolo11")
    assert before.spec.conf_threshold > 0.0123
    assert sum(map(len, now)) > sum(len(committed.detect(data)) for data in images)

    missing = threshold("--from-eval", str(report), "--fp-rate", "8")
    assert missing.returncode == 1 and "no threshold at 8 FP/image" in missing.stderr
    wrong = threshold("--conf", "1.5")
    assert wrong.returncode == 1 and "lies in [0, 1]" in wrong.stderr
