"""Write a model into a Triton model repository: configs, Python entry points and artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

from bonefrac.export.spec import Yolo11Spec
from bonefrac.export.triton_config import write_configs, yolo11_configs

_ENTRY_POINT = '''"""Triton entry point; the model's code is bonefrac.triton_models.{module}."""

from bonefrac.triton_models.{module} import TritonPythonModel  # noqa: F401
'''


def entry_point(module: str) -> str:
    """The text of a one-line ``model.py`` that serves ``bonefrac.triton_models.<module>``."""
    return _ENTRY_POINT.format(module=module)


def yolo11_entry_points(spec: Yolo11Spec) -> dict[str, str]:
    """Python-backend model name -> module of ``bonefrac.triton_models`` that implements it."""
    return {
        spec.preprocess: "yolo11_preprocess",
        spec.detector: "onnx_detector",
        spec.postprocess: "yolo11_postprocess",
    }


def write_yolo11_repository(
    spec: Yolo11Spec, onnx_path: str | Path, repository: str | Path, *, version: int = 1
) -> list[Path]:
    """Write the four models of a YOLO11 spec into ``repository``.

    Args:
        spec: the model spec.
        onnx_path: the exported ONNX file; it is copied to the detector's version folder.
        repository: the model repository folder (created if needed).
        version: the version folder to write.

    Returns:
        The files written.
    """
    repository = Path(repository)
    written = write_configs(yolo11_configs(spec), repository)
    for model, module in yolo11_entry_points(spec).items():
        path = repository / model / str(version) / "model.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry_point(module))
        written.append(path)
    # An ensemble needs an (empty) version folder; the marker keeps it in version control.
    marker = repository / spec.name / str(version) / ".gitkeep"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    target = repository / spec.detector / str(version) / spec.onnx_file
    if Path(onnx_path).resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    written.append(target)
    return written
