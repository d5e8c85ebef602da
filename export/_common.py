"""What the exporters share: errors, the parity report, ONNX metadata, FP16 weight storage, and
the tail of every export (metadata, hash, repository)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bonefrac.errors import BonefracError
from bonefrac.runtime import file_sha256
from bonefrac.spec import DetectorSpec


class ExportError(BonefracError):
    """An export could not be done, or its ONNX model does not match PyTorch."""


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs PyTorch on the same inputs.

    Attributes:
        images: how many inputs were compared.
        max_abs_diff_boxes: largest difference of box coordinates, in input pixels.
        max_abs_diff_scores: largest difference of scores.
        note: anything else the comparison found (e.g. unmatched detections).
    """

    images: int
    max_abs_diff_boxes: float
    max_abs_diff_scores: float
    note: str = ""

    def __str__(self) -> str:
        text = (
            f"ONNX Runtime vs PyTorch on {self.images} images: max |diff| boxes "
            f"{self.max_abs_diff_boxes:.2e} px, scores {self.max_abs_diff_scores:.2e}"
        )
        return f"{text} ({self.note})" if self.note else text

    def check(self, *, box_tolerance_px: float, score_tolerance: float) -> None:
        """Raises:
        ExportError: if either difference is above its tolerance.
        """
        if self.max_abs_diff_boxes > box_tolerance_px or self.max_abs_diff_scores > score_tolerance:
            raise ExportError(
                f"parity check failed: {self} (tolerance {box_tolerance_px} px, "
                f"{score_tolerance} score)"
            )


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        spec: the model spec (with the ONNX file's SHA-256).
        onnx_path: the ONNX file in the repository.
        version: the detector version written.
        parity: ONNX Runtime vs PyTorch.
        files: every file written.
    """

    spec: DetectorSpec
    onnx_path: Path
    version: int
    parity: ParityReport
    files: list[Path]


def finish_export(
    spec: DetectorSpec,
    onnx_path: Path,
    parity: ParityReport,
    input_note: str,
    *,
    out: str | Path,
    profile: str,
    replace: bool,
) -> ExportResult:
    """The tail every export shares, once its ONNX file has passed the parity check: write the
    metadata into the file, record its SHA-256 in the spec, and write the model repository.

    Args:
        spec: the model spec (without the hash yet).
        onnx_path: the checked ONNX file; copied into the repository.
        parity: the parity report, returned with the result.
        input_note: what the graph takes, for the ONNX metadata.
        out: model repository folder.
        profile: ``cpu``, ``gpu-onnx`` or ``gpu-trt``.
        replace: overwrite the newest detector version instead of adding one.
    """
    add_metadata(onnx_path, spec, input_note=input_note)
    from bonefrac.export.repository import write_repository  # Triton's schema: not for training

    spec = spec.with_sha256(file_sha256(onnx_path))
    version, files = write_repository(spec, onnx_path, out, profile=profile, replace=replace)
    target = Path(out) / spec.detector / str(version) / spec.onnx_file
    return ExportResult(spec=spec, onnx_path=target, version=version, parity=parity, files=files)


def weights_file(weights: str | Path, *, hint: str) -> Path:
    """The path of a weights file that must exist: bonefrac never downloads weights (Ultralytics
    would try to, for a missing ``*.pt``).

    Raises:
        ExportError: naming the missing file and, with ``hint``, how to get one.
    """
    path = Path(weights)
    if not path.is_file():
        raise ExportError(
            f"weights file {path} does not exist (bonefrac does not download weights: {hint})"
        )
    return path.resolve()  # Ultralytics' exporter loses a relative path's folder


def require_extras(
    modules: tuple[str, ...], *, extra: str, purpose: str, error: type[Exception]
) -> None:
    """Check that optional dependencies import.

    Args:
        modules: the modules to import.
        extra: the pip extra that installs them (``export``, ``train``).
        purpose: what needs them, for the message (``"export"``, ``"training"``).
        error: the exception type to raise.

    Raises:
        error: naming the missing module and the extra to install.
    """
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise error(
                f"{purpose} needs the {extra} extras ({exc.name} is missing): "
                f"pip install 'bonefrac[{extra}]'"
            ) from None


def require_export_extras() -> None:
    """Raises:
    ExportError: naming the extra to install when torch or its friends are missing.
    """
    require_extras(
        ("onnx", "torch", "torchvision"), extra="export", purpose="export", error=ExportError
    )


def add_metadata(onnx_path: Path, spec: DetectorSpec, *, input_note: str) -> None:
    """Write bonefrac's metadata into an ONNX file: class names, input size and normalisation,
    the spec, and a content hash of the graph."""
    import onnx

    proto = onnx.load(str(onnx_path))
    extra = {
        "bonefrac_model": spec.name,
        "bonefrac_family": spec.family,
        "bonefrac_class_names": json.dumps(list(spec.class_names)),
        "bonefrac_input": input_note,
        "bonefrac_spec": spec.to_json(),
        "bonefrac_graph_sha256": hashlib.sha256(proto.graph.SerializeToString()).hexdigest(),
    }
    if hasattr(spec, "imgsz"):
        extra["bonefrac_imgsz"] = str(spec.imgsz)
    kept = [p for p in proto.metadata_props if p.key not in extra]
    for prop in kept:  # e.g. Ultralytics' "trained on /abs/path/data.yaml": keep no local paths
        prop.value = _scrub_paths(prop.value)
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in extra.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(onnx_path))


def _scrub_paths(text: str) -> str:
    """Replace absolute file paths with their file name."""
    import re

    return re.sub(r"(?<![\w:])/(?:[\w.\-]+/)+([\w.\-]+)", r"\1", text)


def store_weights_fp16(onnx_path: Path, *, min_elements: int = 1024) -> tuple[int, int]:
    """Store large FP32 weights as FP16 with a Cast back to FP32 in front of their users.

    The model still computes in FP32 (ONNX Runtime folds the casts at load); only the file
    halves. Returns the file size before and after, in bytes.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    before = onnx_path.stat().st_size
    proto = onnx.load(str(onnx_path))
    graph = proto.graph
    renamed: dict[str, str] = {}
    new_inits, casts = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_elements:
            half_name = f"{init.name}__fp16"
            array = numpy_helper.to_array(init).astype(np.float16)
            new_inits.append(numpy_helper.from_array(array, half_name))
            casts.append(
                helper.make_node(
                    "Cast",
                    [half_name],
                    [init.name],
                    to=onnx.TensorProto.FLOAT,
                    name=f"{init.name}__cast",
                )
            )
            renamed[init.name] = half_name
        else:
            new_inits.append(init)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(proto, str(onnx_path))
    return before, onnx_path.stat().st_size
