"""Export an Ultralytics YOLO11 checkpoint (or a model built from its config) to ONNX, check
ONNX Runtime against PyTorch, and write it into a Triton model repository.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bonefrac.export._common import (
    ExportError,
    ExportResult,
    ParityReport,
    finish_export,
    require_export_extras,
    weights_file,
)
from bonefrac.spec import Yolo11Spec


def _build_model(
    *, weights: str | Path | None, config: str | None, class_names: Sequence[str] | None, seed: int
):
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    if (weights is None) == (config is None):
        raise ExportError("give exactly one of --weights PATH.pt or --config yolo11n.yaml")
    torch.manual_seed(seed)
    if weights is not None:
        path = weights_file(weights, hint="train with 'bonefrac train' or copy the .pt file here")
        model = YOLO(str(path), task="detect")
        names = [model.model.names[i] for i in sorted(model.model.names)]
        if class_names is not None and list(class_names) != names:
            raise ExportError(
                f"--classes {list(class_names)} do not match the checkpoint's classes {names}"
            )
        return model, names
    if not class_names:
        raise ExportError("--config needs --classes (or --data) to know the class count")
    try:
        cfg = yaml_model_load(config)
    except Exception as exc:
        raise ExportError(f"cannot read model config {config!r}: {exc}") from exc
    cfg["nc"] = len(class_names)
    folder = Path(tempfile.mkdtemp(prefix="bonefrac-cfg-"))
    # The file name carries the scale (n/s/m/l/x) that Ultralytics reads from it.
    cfg_path = folder / Path(str(cfg.get("yaml_file", config))).name
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = YOLO(str(cfg_path), task="detect")
    model.model.names = dict(enumerate(class_names))
    return model, list(class_names)


def _export_onnx(model, *, imgsz: int, opset: int, folder: Path) -> Path:
    cwd = Path.cwd()
    os.chdir(folder)  # Ultralytics writes next to the model file, or here for a config
    try:
        out = model.export(
            format="onnx",
            opset=opset,
            dynamic=True,
            simplify=True,
            imgsz=imgsz,
            device="cpu",
            batch=1,
        )
    finally:
        os.chdir(cwd)
    path = Path(out) if Path(out).is_absolute() else folder / out
    if path.parent != folder:  # written next to the weights file: leave nothing there
        path = Path(shutil.move(path, folder / path.name))
    return path


def _parity_inputs(images: Sequence[Path], *, imgsz: int, seed: int) -> np.ndarray:
    from bonefrac.processing import preprocess_yolo

    if images:
        return np.stack([preprocess_yolo(Path(p).read_bytes(), size=imgsz)[0] for p in images])
    rng = np.random.default_rng(seed)
    return rng.random((2, 3, imgsz, imgsz), dtype=np.float32)


def check_parity(model, onnx_path: Path, inputs: np.ndarray, *, num_classes: int) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same inputs and report the largest differences."""
    import torch

    from bonefrac.runtime import OnnxDetector

    detector = OnnxDetector(onnx_path, threads=0)
    torch_model = model.model.float().eval()
    box_diff = score_diff = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = torch_model(torch.from_numpy(x[None]))
            ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
            got = detector.run(x[None])
            if got.shape != ref.shape or got.shape[1] != 4 + num_classes:
                raise ExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}")
            diff = np.abs(got - ref)
            box_diff = max(box_diff, float(diff[:, :4].max()))
            score_diff = max(score_diff, float(diff[:, 4:].max()))
    return ParityReport(
        images=len(inputs), max_abs_diff_boxes=box_diff, max_abs_diff_scores=score_diff
    )


def export_yolo11(
    *,
    out: str | Path,
    weights: str | Path | None = None,
    config: str | None = None,
    class_names: Sequence[str] | None = None,
    imgsz: int = 640,
    name: str = "yolo11",
    opset: int = 17,
    seed: int = 0,
    parity_images: Sequence[Path] = (),
    box_tolerance_px: float = 0.05,
    score_tolerance: float = 1e-3,
    profile: str = "cpu",
    replace: bool = False,
) -> ExportResult:
    """Export an Ultralytics YOLO11 to ONNX, check ONNX Runtime against PyTorch, and write
    the model into a Triton model repository.

    Args:
        weights: an Ultralytics ``.pt`` checkpoint; or
        config: a model config such as ``yolo11n.yaml`` (random weights, seeded by ``seed``).
        class_names: the classes; required with ``config``, checked against ``weights``.
        imgsz: letterbox side in pixels.
        name: the ensemble's name.
        opset: ONNX opset.
        seed: seed of the random initialisation and of random parity inputs.
        parity_images: image files for the parity check (random inputs when empty).
        box_tolerance_px: largest allowed box difference, in input pixels.
        score_tolerance: largest allowed score difference.
        out, profile, replace: the repository folder, the profile (``cpu``, ``gpu-onnx`` or
            ``gpu-trt``) and whether to overwrite the newest detector version instead of adding
            one (see :func:`bonefrac.export._common.finish_export`).

    Raises:
        ExportError: bad arguments, missing extras, or parity above tolerance.
    """
    require_export_extras()
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    model, names = _build_model(weights=weights, config=config, class_names=class_names, seed=seed)
    spec = Yolo11Spec(class_names=tuple(names), name=name, imgsz=imgsz)
    with tempfile.TemporaryDirectory(prefix="bonefrac-export-") as tmp:
        onnx_path = _export_onnx(model, imgsz=imgsz, opset=opset, folder=Path(tmp))
        parity = check_parity(
            model,
            onnx_path,
            _parity_inputs(parity_images, imgsz=imgsz, seed=seed),
            num_classes=len(names),
        )
        parity.check(box_tolerance_px=box_tolerance_px, score_tolerance=score_tolerance)
        note = "RGB float32 NCHW in [0, 1], letterboxed with grey 114"
        return finish_export(
            spec, onnx_path, parity, note, out=out, profile=profile, replace=replace
        )
