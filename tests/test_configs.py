"""The generated Triton configs: they parse with Triton's own schema, the committed repository is
what the spec generates, and the ensemble is wired consistently."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bonefrac.export.repository import entry_point, yolo11_entry_points
from bonefrac.export.spec import BatchingSpec, Yolo11Spec
from bonefrac.export.triton_config import to_pbtxt, yolo11_configs
from bonefrac.runtime import (
    config_parameters,
    file_sha256,
    read_model_config,
    read_pipeline_settings,
)


def _committed_settings(repository) -> dict:
    """The spec fields an export chose (image size), read back from the committed ensemble."""
    params = config_parameters(read_model_config(repository / "yolo11" / "config.pbtxt"))
    return {"imgsz": int(params["imgsz"])}


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_every_generated_config_parses_with_triton_schema():
    for config in yolo11_configs(Yolo11Spec()).values():
        assert _parse(to_pbtxt(config)) == config


def test_committed_repository_is_what_the_spec_generates(repository):
    onnx = repository / "yolo11_detector" / "1" / "model.onnx"
    spec = Yolo11Spec(model_sha256=file_sha256(onnx), **_committed_settings(repository))
    for name, config in yolo11_configs(spec).items():
        committed = (repository / name / "config.pbtxt").read_text()
        assert committed == to_pbtxt(config), f"{name}/config.pbtxt differs from the spec"
    for model, module in yolo11_entry_points(Yolo11Spec()).items():
        assert (repository / model / "1" / "model.py").read_text() == entry_point(module)


def test_entry_points_name_existing_modules():
    import importlib.util

    for module in set(yolo11_entry_points(Yolo11Spec()).values()):
        assert importlib.util.find_spec(f"bonefrac.triton_models.{module}") is not None


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


def test_ensemble_wiring_is_consistent():
    spec = Yolo11Spec()
    _wiring(yolo11_configs(spec), spec.name)


def test_detector_rows_follow_class_count():
    spec = Yolo11Spec(class_names=("a", "b"), name="tiny")
    configs = yolo11_configs(spec)
    assert list(configs["tiny_detector"].output[0].dims) == [6, -1]
    _wiring(configs, "tiny")


def test_spec_refuses_bad_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        Yolo11Spec(imgsz=100)
    with pytest.raises(ValueError, match="preferred batch sizes"):
        BatchingSpec(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="unknown profile"):
        yolo11_configs(Yolo11Spec(), profile="tpu")


def test_pipeline_settings_come_from_the_repository(repository):
    settings = read_pipeline_settings(repository, "yolo11")
    assert settings.imgsz == 640 and len(settings.names) == 7
    assert settings.onnx_path.is_file()
    assert read_model_config(repository / "yolo11" / "config.pbtxt").platform == "ensemble"
