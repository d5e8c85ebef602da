"""ONNX Runtime execution, and the in-process reference pipeline.

The reference pipeline runs exactly what the served ensemble runs (``bonefrac.processing`` around
the same ONNX file), in the caller's process and without a server. It reads its settings from the
same ``config.pbtxt`` files the server loads, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonefrac.detections import Detections
from bonefrac.errors import ModelRepositoryError
from bonefrac.processing import postprocess_yolo, preprocess_yolo


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxDetector:
    """An ONNX detector run by ONNX Runtime on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; 0 lets ONNX Runtime choose (one per core).

    Raises:
        ModelRepositoryError: if the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelRepositoryError(
                f"ONNX file {path} does not exist: run 'bonefrac export' to build it"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelRepositoryError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def check_input(self, array: np.ndarray) -> None:
        """Check a batch before running it.

        Raises:
            ValueError: if ``array`` is not float32 ``(batch, 3, H, W)``.
        """
        if array.dtype != np.float32:
            raise ValueError(f"input '{self.input.name}' must be FP32, got {array.dtype}")
        if array.ndim != 4 or array.shape[1] != 3 or min(array.shape) < 1:
            raise ValueError(
                f"input '{self.input.name}' must have shape (batch, 3, height, width), "
                f"got {tuple(array.shape)}"
            )
        for axis, dim in zip((2, 3), self.input.shape[2:]):
            if isinstance(dim, int) and array.shape[axis] != dim:
                raise ValueError(
                    f"input '{self.input.name}' must be {dim} pixels along axis {axis}, "
                    f"got {array.shape[axis]}"
                )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(batch, 3, H, W)`` float32 -> the first output, e.g. YOLO's ``(batch, 4 + nc, A)``."""
        return self.session.run(self.output_names[:1], {self.input.name: batch})[0]


def read_model_config(path: str | os.PathLike[str]):
    """Parse a ``config.pbtxt`` with Triton's own ``ModelConfig`` schema.

    Raises:
        ModelRepositoryError: if the file is missing or does not parse.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(path)
    if not path.is_file():
        raise ModelRepositoryError(f"{path} does not exist")
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelRepositoryError(f"{path} is not a valid Triton model config: {exc}") from exc


def config_parameters(config) -> dict[str, str]:
    """A parsed config's ``parameters`` as a plain dict of strings."""
    return {key: value.string_value for key, value in config.parameters.items()}


def latest_version(model_dir: Path) -> Path:
    """The highest numbered version folder of a model.

    Raises:
        ModelRepositoryError: if the model has no version folder.
    """
    versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.name.isdigit())
    if not versions:
        raise ModelRepositoryError(f"model folder {model_dir} has no numbered version folder")
    return versions[-1][1]


@dataclass(frozen=True)
class PipelineSettings:
    """What the served ensemble does, read from its model repository."""

    family: str
    imgsz: int
    names: tuple[str, ...]
    onnx_path: Path
    conf_threshold: float
    iou_threshold: float
    max_det: int


def read_pipeline_settings(repository: str | os.PathLike[str], model: str) -> PipelineSettings:
    """Read an ensemble's steps and their parameters from a model repository.

    Raises:
        ModelRepositoryError: if the ensemble or one of its steps is missing or malformed.
    """
    repo = Path(repository)
    ensemble = read_model_config(repo / model / "config.pbtxt")
    family = config_parameters(ensemble).get("pipeline", "")
    if family != "yolo11":
        raise ModelRepositoryError(
            f"model '{model}' in {repo} is not a bonefrac ensemble with a known pipeline "
            f"(parameter 'pipeline' is {family!r}; known: 'yolo11')"
        )
    steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
    if len(steps) != 3:
        raise ModelRepositoryError(f"ensemble '{model}' must have 3 steps, found {steps}")
    pre, det, post = (
        config_parameters(read_model_config(repo / s / "config.pbtxt")) for s in steps
    )
    try:
        return PipelineSettings(
            family=family,
            imgsz=int(pre["imgsz"]),
            names=tuple(json.loads(post["class_names"])),
            onnx_path=latest_version(repo / steps[1]) / det["onnx_file"],
            conf_threshold=float(post.get("conf_threshold", 0.25)),
            iou_threshold=float(post.get("iou_threshold", 0.7)),
            max_det=int(post.get("max_det", 300)),
        )
    except (KeyError, ValueError) as exc:
        raise ModelRepositoryError(f"ensemble '{model}': a step lacks a parameter: {exc}") from exc


class InProcessPipeline:
    """The served pipeline, run in this process: the reference the server is checked against.

    Args:
        repository: model repository folder.
        model: ensemble name, e.g. ``"yolo11"``.
        threads: ONNX Runtime intra-op threads (0: one per core).
    """

    def __init__(self, repository: str | os.PathLike[str], model: str, *, threads: int = 0) -> None:
        self.settings = read_pipeline_settings(repository, model)
        self.detector = OnnxDetector(self.settings.onnx_path, threads=threads)
        self.model = model

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.settings.names

    def detect(
        self,
        data: bytes,
        *,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> Detections:
        """Encoded image bytes -> detections in original pixels.

        Raises:
            ImageDecodeError: if the bytes are not a readable image.
        """
        s = self.settings
        tensor, transform = preprocess_yolo(data, size=s.imgsz)
        raw = self.detector.run(tensor[None])[0]
        return postprocess_yolo(
            raw,
            transform,
            names=s.names,
            conf_threshold=s.conf_threshold if conf_threshold is None else conf_threshold,
            iou_threshold=s.iou_threshold if iou_threshold is None else iou_threshold,
            max_det=s.max_det,
        )
