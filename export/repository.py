"""Write a model into a Triton model repository: configs, Python entry points and artifacts.

Layout (``model_repository/<model>/<version>/``)::

    <name>/config.pbtxt, <name>/1/                      ensemble (empty version folder), or
                                                        1/model.py: one model (cpu, "single")
    <name>_preprocess/config.pbtxt, 1/model.py          Python backend
    <name>_detector/config.pbtxt, <N>/model.onnx        (+ model.py on the cpu profile)
    <name>_postprocess/config.pbtxt, 1/model.py         Python backend

Exporting into a repository that already holds the detector adds version N+1 (Triton serves the
newest by default) unless ``replace`` is asked for.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from bonefrac.export.triton_config import (
    model_configs,
    single_model,
    warmup_shape,
    write_configs,
)
from bonefrac.spec import DetectorSpec, FrcnnSpec

_ENTRY_POINT = '''"""Triton entry point; the model's code is bonefrac.triton_models.{module}."""

from bonefrac.triton_models.{module} import TritonPythonModel  # noqa: F401
'''


def entry_point(module: str) -> str:
    """The text of a one-line ``model.py`` that serves ``bonefrac.triton_models.<module>``."""
    return _ENTRY_POINT.format(module=module)


def entry_points(spec: DetectorSpec, *, profile: str = "cpu") -> dict[str, str]:
    """Python-backend model name -> module of ``bonefrac.triton_models`` that implements it."""
    points = {spec.preprocess: "preprocess", spec.postprocess: "postprocess"}
    if profile == "cpu":
        points[spec.detector] = "onnx_detector"
    if single_model(spec, profile):
        points[spec.name] = "fused"
    return points


def versions(model_dir: Path) -> list[int]:
    """The numbered version folders of a model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path, *, replace: bool) -> int:
    """The version an export writes: a new one, or the newest when replacing."""
    found = versions(model_dir)
    if not found:
        return 1
    return found[-1] if replace else found[-1] + 1


def engine_script(spec: DetectorSpec, *, version: int) -> str:
    """A shell script that builds the TensorRT engine on a GPU node with ``trtexec``."""
    dims, (bmin, bopt, bmax) = warmup_shape(spec)
    c = dims[0]
    if isinstance(spec, FrcnnSpec):
        lo, opt, hi = (
            f"1x{c}x{spec.min_size // 2}x{spec.min_size // 2}",
            f"1x{c}x{spec.min_size}x{spec.max_size}",
            f"1x{c}x{spec.max_size}x{spec.max_size}",
        )
    else:
        s = spec.imgsz
        lo, opt, hi = (f"{bmin}x{c}x{s}x{s}", f"{bopt}x{c}x{s}x{s}", f"{bmax}x{c}x{s}x{s}")
    return f"""#!/usr/bin/env bash
# Build the TensorRT engine of {spec.detector} version {version} (FP16) on the GPU node that serves
# it, inside NVIDIA's tritonserver container (same TensorRT version as the server):
#   docker compose run --rm triton bash /models/{spec.detector}/build_engine.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v trtexec >/dev/null 2>&1; then
  for candidate in /usr/src/tensorrt/bin/trtexec /opt/tensorrt/bin/trtexec; do
    [ -x "$candidate" ] && PATH="$(dirname "$candidate"):$PATH" && break
  done
fi
if ! command -v trtexec >/dev/null 2>&1; then
  echo "trtexec not found: run this in NVIDIA's tritonserver image on a GPU node" >&2
  exit 1
fi
if ! nvidia-smi >/dev/null 2>&1; then
  echo "no NVIDIA GPU visible: engines must be built on the GPU that runs them" >&2
  exit 1
fi
trtexec --onnx="$here/{version}/{spec.onnx_file}" \\
  --saveEngine="$here/{version}/model.plan" --fp16 \\
  --minShapes=images:{lo} --optShapes=images:{opt} --maxShapes=images:{hi}
echo "wrote $here/{version}/model.plan"
"""


def write_repository(
    spec: DetectorSpec,
    onnx_path: str | Path,
    repository: str | Path,
    *,
    profile: str = "cpu",
    replace: bool = False,
) -> tuple[int, list[Path]]:
    """Write the four models of a spec into ``repository``.

    Args:
        spec: the model spec.
        onnx_path: the exported ONNX file; copied into the detector's new version folder.
        repository: the model repository folder (created if needed).
        profile: ``cpu``, ``gpu-onnx`` or ``gpu-trt`` (see :mod:`bonefrac.export.triton_config`).
        replace: overwrite the newest detector version instead of adding one.

    Returns:
        The detector version written, and the files written.
    """
    repository = Path(repository)
    version = next_version(repository / spec.detector, replace=replace)
    written = write_configs(model_configs(spec, profile=profile), repository)
    for model, module in entry_points(spec, profile=profile).items():
        model_version = version if model == spec.detector else 1
        path = repository / model / str(model_version) / "model.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry_point(module))
        written.append(path)
    # An ensemble needs an (empty) version folder; the marker keeps it in version control.
    marker = repository / spec.name / "1" / ".gitkeep"
    if single_model(spec, profile):
        marker.unlink(missing_ok=True)
    else:
        (marker.parent / "model.py").unlink(missing_ok=True)  # left by the one-model layout
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    target = repository / spec.detector / str(version) / spec.onnx_file
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(onnx_path).resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    written.append(target)
    if profile == "gpu-trt":
        script = repository / spec.detector / "build_engine.sh"
        script.write_text(engine_script(spec, version=version))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(script)
    return version, written


def set_default_threshold(repository: str | Path, model: str, conf_threshold: float) -> list[Path]:
    """Give a CPU-profile ensemble another default score threshold (what a request without
    ``conf_threshold`` gets; the UI starts there), rewriting its configs in place. The ONNX
    file is untouched, so its SHA-256 and the evaluator's cache stay valid.

    Raises:
        ModelRepositoryError: if ``model`` is not a bonefrac ensemble of ``repository``.
        ValueError: if the threshold is outside [0, 1].
    """
    import dataclasses

    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(repository, model).spec
    spec = dataclasses.replace(spec, conf_threshold=round(float(conf_threshold), 4))
    return write_configs(model_configs(spec, profile="cpu"), repository)


def retarget(
    repository: str | Path,
    model: str,
    *,
    profile: str,
    out: str | Path,
    cpu_layout: str | None = None,
) -> tuple[int, list[Path]]:
    """Write an exported model into another repository for another profile (e.g. the committed
    CPU repository -> a ``gpu-trt`` repository for a GPU node), without re-exporting; ``out``
    may be ``repository`` itself.

    Args:
        cpu_layout: ``"ensemble"`` or ``"single"`` (see :class:`bonefrac.spec.BatchingSpec`);
            None keeps the source's.

    Raises:
        ModelRepositoryError: if ``model`` is not a bonefrac ensemble of ``repository``.
        ValueError: an unknown ``cpu_layout``.
    """
    import dataclasses

    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    spec = found.spec
    if cpu_layout is not None:
        batching = dataclasses.replace(spec.batching, cpu_layout=cpu_layout)
        spec = dataclasses.replace(spec, batching=batching)
    return write_repository(spec, found.onnx_path, out, profile=profile, replace=True)
