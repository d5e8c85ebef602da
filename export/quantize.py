"""INT8 for the CPU profile: ONNX Runtime static quantization (QDQ, per-channel INT8 weights in 7
bits, UINT8 activations; the stem and the Detect head stay FP32), calibrated on training images
through bonefrac's own pre-processing.

The quantized detector is served as its own ensemble (``<name>_int8``) next to the FP32 one, so
both can be measured side by side (``bonefrac bench``, ``bonefrac eval``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bonefrac.export._common import ExportError
from bonefrac.export.repository import write_repository
from bonefrac.pipeline import preprocessor, read_repository_model
from bonefrac.runtime import file_sha256
from bonefrac.spec import Yolo11Spec


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over pre-processed images."""

    def __init__(self, tensors: list[np.ndarray], input_name: str) -> None:
        self.items = iter([{input_name: t[None]} for t in tensors])

    def get_next(self):
        return next(self.items, None)


#: Ultralytics modules kept FP32 at the input end: the stem's two strided convolutions. Their
#: activations are the largest maps of the network and carry its whole input range; quantized,
#: their error carries through every later layer. Chosen among eight variants on the YOLO11n
#: shipped 2026-12-04, each calibrated on the same 64 train images and scored in-process
#: (6-class AP50; a 2-core AMD EPYC without VNNI). Valid (FP32 0.1268): 8-bit weights 0.1075,
#: 7-bit 0.1126; first conv FP32 0.1187 / 0.1218 (8 / 7 bits); stem FP32 0.1266 / 0.1288;
#: 7-bit with C2PSA's attention FP32 (worst local SQNR, 9 dB, its Softmax) 0.1158, with stem and
#: attention 0.1268. The first 600 train images (not a held-out set; FP32 0.2524) order them
#: the same: 8-bit 0.1965, 7-bit 0.1874, stem 0.2195 / 0.2241, attention 0.1895, both 0.2282.
#: Speed unchanged (ONNX Runtime, 640 px, 2 threads: 67 ms with the stem FP32, 69 ms without).
STEM_MODULES = (0, 1)


def _fp32_nodes(onnx_path: Path) -> list[str]:
    """The nodes that stay FP32: Ultralytics' last module, the Detect head, and the stem.

    The head puts box coordinates in pixels (0-640) and class scores (0-1) into one tensor;
    quantizing that to one UINT8 scale wipes the scores out (measured: AP 0). The stem: see
    :data:`STEM_MODULES`. Backbone and neck, most of the compute, go INT8."""
    import re

    import onnx

    nodes = onnx.load(str(onnx_path)).graph.node
    index = [int(m.group(1)) for n in nodes if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not index:
        return []
    keep = tuple(f"/model.{i}/" for i in (*STEM_MODULES, max(index)))
    return [n.name for n in nodes if n.name.startswith(keep)]


def quantize_yolo11(
    *,
    repository: str | Path,
    model: str = "yolo11",
    calibration_images: Sequence[Path],
    out: str | Path | None = None,
    name: str | None = None,
) -> tuple[Yolo11Spec, Path]:
    """Quantize a repository's YOLO11 detector to INT8 and write it as ensemble ``name``.

    Args:
        repository: the repository holding the FP32 ensemble.
        model: the FP32 ensemble's name.
        calibration_images: image files (training images: never the split you score on).
        out: repository to write (default: ``repository``).
        name: the INT8 ensemble's name (default: ``<model>_int8``).

    Raises:
        ExportError: not a YOLO11 ensemble, or no calibration images.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    found = read_repository_model(repository, model)
    if not isinstance(found.spec, Yolo11Spec):
        raise ExportError(f"'{model}' is a {found.spec.family} model; INT8 is done for YOLO11")
    if not calibration_images:
        raise ExportError("give calibration images (from the training split)")
    pre = preprocessor(found.spec)
    tensors = [pre(Path(p).read_bytes())[0] for p in calibration_images]
    spec = dataclasses.replace(found.spec, name=name or f"{model}_int8", model_sha256="")
    with tempfile.TemporaryDirectory(prefix="bonefrac-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(found.onnx_path), str(prepared), skip_symbolic_shape=True)
        target = Path(tmp) / "model.onnx"
        quantize_static(
            str(prepared),
            str(target),
            _Calibration(tensors, "images"),
            nodes_to_exclude=_fp32_nodes(prepared),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI multiply UINT8 by INT8 in pairs summed to 16
            # bits, which saturates at full-range weights; 7 bits cannot.
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        spec = spec.with_sha256(file_sha256(target))
        write_repository(spec, target, out or repository, replace=True)
    return spec, Path(out or repository)
