"""The per-request work of each pipeline step, written once for the Triton Python-backend models.

The step models (``preprocess``, ``onnx_detector``, ``postprocess``: the ensemble layout) and the
one-model layout (``fused``) call these same functions, so both layouts answer alike, with the
same per-request errors. ``pb_utils`` (``triton_python_backend_utils``, which exists only inside
the backend stub) is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bonefrac.processing import InputTransform
from bonefrac.spec import DetectorSpec, conf_threshold_ok, iou_threshold_ok
from bonefrac.triton_models._support import optional_per_item, pad_stack


def load_detector(path: str, params: Mapping[str, str]) -> Any:
    """The :class:`bonefrac.runtime.OnnxDetector` of an ONNX file, with the model config's
    ``intra_op_threads``, ``allow_spinning`` and ``spin_after_run`` parameters."""
    from bonefrac.runtime import OnnxDetector

    return OnnxDetector(
        path,
        threads=int(params.get("intra_op_threads", "0") or 0),
        spin=params.get("allow_spinning", "1") != "0",
        spin_after_run=params.get("spin_after_run", "1") != "0",
    )


def preprocess_request(pb_utils: Any, request: Any, preprocess: Callable) -> tuple[Any, Any]:
    """One request's encoded images (input ``image``, BYTES ``[B, 1]``) -> detector input FP32
    ``(B, 3, H, W)`` and transforms FP32 ``(B, 6)`` (:class:`InputTransform` arrays).

    Raises:
        ValueError: an image that cannot be decoded, or images of one request that give inputs
            of different sizes.
    """
    encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
    tensors, transforms = [], []
    for item in encoded.reshape(encoded.shape[0], -1)[:, 0]:
        tensor, transform = preprocess(bytes(item))
        tensors.append(tensor)
        transforms.append(transform.to_array())
    if len({t.shape for t in tensors}) > 1:
        raise ValueError(
            "images of one request must give inputs of one size; send them in separate requests"
        )
    return np.stack(tensors), np.stack(transforms)


def run_grouped(detector: Any, inputs: Mapping[int, np.ndarray]) -> dict[int, Any]:
    """Run the detector once per input shape over the requests of a dynamic batch.

    Args:
        detector: a :class:`bonefrac.runtime.OnnxDetector`.
        inputs: request index -> its input FP32 ``(B, 3, H, W)``.

    Returns:
        request index -> its raw output rows, or the exception that failed it (a malformed input
        fails alone; a failed run fails the requests of its group).
    """
    results: dict[int, Any] = {}
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, array in inputs.items():
        try:
            detector.check_input(array)
            groups.setdefault(array.shape[1:], []).append(i)
        except Exception as exc:
            results[i] = exc
    for members in groups.values():
        try:
            outputs = detector.run(np.concatenate([inputs[i] for i in members]))
        except Exception as exc:
            results.update((i, exc) for i in members)
            continue
        start = 0
        for i in members:
            results[i] = outputs[start : start + inputs[i].shape[0]]
            start += inputs[i].shape[0]
    return results


def postprocess_request(
    pb_utils: Any,
    request: Any,
    *,
    raw: np.ndarray,
    transforms: np.ndarray,
    spec: DetectorSpec,
    postprocess: Callable,
) -> list[Any]:
    """One request's raw detector output and transforms -> its output tensors (``num_detections``,
    ``boxes``, ``scores``, ``class_ids``, ``class_names``, ``image_size``), with the request's
    optional ``conf_threshold`` / ``iou_threshold`` (the spec's defaults without them).

    Raises:
        ValueError: a threshold out of range, or a transform that is not valid.
    """
    batch = raw.shape[0]
    conf = optional_per_item(
        pb_utils,
        request,
        "conf_threshold",
        batch=batch,
        default=spec.conf_threshold,
        valid=conf_threshold_ok,
    )
    iou = optional_per_item(
        pb_utils,
        request,
        "iou_threshold",
        batch=batch,
        default=spec.iou_threshold,
        valid=iou_threshold_ok,
    )
    results = [
        postprocess(
            raw[b],
            InputTransform.from_array(transforms[b]),
            conf_threshold=conf[b],
            iou_threshold=iou[b],
        )
        for b in range(batch)
    ]
    return _pack(pb_utils, results)


def _pack(pb_utils: Any, results: list) -> list[Any]:
    names = [np.array(r.class_names, dtype=object) for r in results]
    f32, i32 = np.float32, np.int32
    return [
        pb_utils.Tensor("num_detections", np.array([[len(r)] for r in results], dtype=i32)),
        pb_utils.Tensor("boxes", pad_stack([r.xyxy for r in results], tail_shape=(4,), dtype=f32)),
        pb_utils.Tensor("scores", pad_stack([r.scores for r in results], tail_shape=(), dtype=f32)),
        pb_utils.Tensor(
            "class_ids", pad_stack([r.class_ids for r in results], tail_shape=(), dtype=i32)
        ),
        pb_utils.Tensor("class_names", pad_stack(names, tail_shape=(), dtype=object, fill=b"")),
        pb_utils.Tensor("image_size", np.array([r.image_size for r in results], dtype=i32)),
    ]
