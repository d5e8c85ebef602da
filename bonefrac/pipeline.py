"""The detection pipeline of a spec: its pre-processing, post-processing, and the in-process
reference that runs the whole pipeline without a server.

The Triton Python models and :class:`InProcessPipeline` both get their processing from
:func:`preprocessor` and :func:`postprocessor`, so served and in-process results cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from bonefrac.detections import Detections, Detector, Threshold
from bonefrac.errors import ModelRepositoryError
from bonefrac.processing import InputTransform, postprocess, preprocess_frcnn, preprocess_yolo
from bonefrac.spec import DetectorSpec, FrcnnSpec, Yolo11Spec, check_thresholds, spec_from_json

Preprocessor = Callable[[bytes], tuple[np.ndarray, InputTransform]]


def preprocessor(spec: DetectorSpec) -> Preprocessor:
    """Encoded bytes -> ``(3, H, W)`` float32 detector input and its transform."""
    if isinstance(spec, Yolo11Spec):
        return partial(preprocess_yolo, size=spec.imgsz)
    if isinstance(spec, FrcnnSpec):
        return partial(preprocess_frcnn, max_side=spec.max_input_side)
    raise ValueError(f"no pre-processing for {type(spec).__name__}")


def postprocessor(spec: DetectorSpec) -> Callable[..., Detections]:
    """``(raw, transform, *, conf_threshold, iou_threshold)`` -> detections in original pixels;
    ``raw`` is one image's detector output; a threshold left None is the spec's default."""

    def post(
        raw: np.ndarray,
        transform: InputTransform,
        *,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> Detections:
        return postprocess(
            raw,
            transform,
            family=spec.family,
            names=spec.class_names,
            conf_threshold=spec.conf_threshold if conf_threshold is None else conf_threshold,
            iou_threshold=spec.iou_threshold if iou_threshold is None else iou_threshold,
            max_det=spec.max_det,
        )

    return post


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
    found = (
        sorted((int(p.name), p) for p in model_dir.iterdir() if p.name.isdigit())
        if model_dir.is_dir()
        else []
    )
    if not found:
        raise ModelRepositoryError(f"model folder {model_dir} has no numbered version folder")
    return found[-1][1]


@dataclass(frozen=True)
class RepositoryModel:
    """An ensemble of a model repository: its spec and the newest ONNX file of its detector."""

    spec: DetectorSpec
    onnx_path: Path


def read_repository_model(repository: str | os.PathLike[str], model: str) -> RepositoryModel:
    """Read an ensemble's spec from its ``config.pbtxt``.

    Raises:
        ModelRepositoryError: if the ensemble is missing or not a bonefrac ensemble.
    """
    repo = Path(repository)
    params = config_parameters(read_model_config(repo / model / "config.pbtxt"))
    if "spec" not in params:
        raise ModelRepositoryError(
            f"model '{model}' in {repo} is not a bonefrac ensemble (its config has no 'spec')"
        )
    try:
        spec = spec_from_json(params["spec"])
    except (ValueError, TypeError) as exc:
        raise ModelRepositoryError(f"model '{model}': unreadable spec: {exc}") from exc
    return RepositoryModel(spec, latest_version(repo / spec.detector) / spec.onnx_file)


class InProcessPipeline(Detector):
    """The served pipeline, run in this process: the reference the server is checked against.

    Args:
        repository: model repository folder.
        model: ensemble name, e.g. ``"yolo11"`` or ``"frcnn"``.
        threads: ONNX Runtime intra-op threads (0: one per core).

    Raises:
        ModelRepositoryError: if the model or its ONNX file is missing.
    """

    def __init__(self, repository: str | os.PathLike[str], model: str, *, threads: int = 0) -> None:
        from bonefrac.runtime import OnnxDetector

        found = read_repository_model(repository, model)
        self.spec = found.spec
        self.onnx_path = found.onnx_path
        self.detector = OnnxDetector(found.onnx_path, threads=threads)
        self.model = model
        self._pre = preprocessor(self.spec)
        self._post = postprocessor(self.spec)

    @property
    def model_classes(self) -> tuple[str, ...]:
        """The model's classes, in class-id order (each detection's name is one of these)."""
        return self.spec.class_names

    #: The former name of :attr:`model_classes`.
    class_names = model_classes

    def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """Encoded image bytes -> detections in original pixels (thresholds as
        :meth:`Detector.detect`; None: the spec's default).

        Raises:
            ValueError: a threshold out of range.
            ImageDecodeError: if the bytes are not a readable image.
        """
        check_thresholds(conf_threshold=conf_threshold, iou_threshold=iou_threshold)
        tensor, transform = self._pre(data)
        raw = self.detector.run(tensor[None])[0]
        return self._post(
            raw, transform, conf_threshold=conf_threshold, iou_threshold=iou_threshold
        )
