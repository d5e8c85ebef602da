"""YOLO11 post-processing: raw detector output -> detections in original-image pixels.

Inputs ``output0`` (FP32 ``[4 + nc, anchors]``), ``letterbox`` (FP32 ``[6]``), and optional
``conf_threshold`` / ``iou_threshold`` (FP32 ``[1]``). Outputs ``num_detections`` (INT32 ``[1]``),
``boxes`` (FP32 ``[n, 4]`` xyxy pixels), ``scores`` (FP32 ``[n]``), ``class_ids`` (INT32 ``[n]``),
``class_names`` (BYTES ``[n]``) and ``image_size`` (INT32 ``[2]``: height, width); rows past
``num_detections`` are padding when several images share one request.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from bonefrac.processing import LetterboxTransform, postprocess_yolo
from bonefrac.triton_models._support import (
    class_names,
    error_response,
    model_parameters,
    optional_per_item,
    pad_stack,
)


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = model_parameters(json.loads(args["model_config"]))
        self.names = class_names(params, model=self.name)
        self.conf_threshold = float(params.get("conf_threshold", "0.25"))
        self.iou_threshold = float(params.get("iou_threshold", "0.7"))
        self.max_det = int(params.get("max_det", "300"))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "output0").as_numpy()
                transforms = pb_utils.get_input_tensor_by_name(request, "letterbox").as_numpy()
                batch = raw.shape[0]
                conf = optional_per_item(
                    pb_utils,
                    request,
                    "conf_threshold",
                    batch=batch,
                    default=self.conf_threshold,
                    valid=lambda v: 0.0 <= v <= 1.0,
                )
                iou = optional_per_item(
                    pb_utils,
                    request,
                    "iou_threshold",
                    batch=batch,
                    default=self.iou_threshold,
                    valid=lambda v: 0.0 < v <= 1.0,
                )
                results = [
                    postprocess_yolo(
                        raw[b],
                        LetterboxTransform.from_array(transforms[b]),
                        names=self.names,
                        conf_threshold=conf[b],
                        iou_threshold=iou[b],
                        max_det=self.max_det,
                    )
                    for b in range(batch)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=_pack(results)))
            except Exception as exc:
                responses.append(error_response(pb_utils, exc, model=self.name))
        return responses


def _pack(results):
    names = [np.array(r.class_names, dtype=object) for r in results]
    return [
        pb_utils.Tensor("num_detections", np.array([[len(r)] for r in results], dtype=np.int32)),
        pb_utils.Tensor(
            "boxes", pad_stack([r.xyxy for r in results], tail_shape=(4,), dtype=np.float32)
        ),
        pb_utils.Tensor(
            "scores", pad_stack([r.scores for r in results], tail_shape=(), dtype=np.float32)
        ),
        pb_utils.Tensor(
            "class_ids", pad_stack([r.class_ids for r in results], tail_shape=(), dtype=np.int32)
        ),
        pb_utils.Tensor("class_names", pad_stack(names, tail_shape=(), dtype=object, fill=b"")),
        pb_utils.Tensor("image_size", np.array([r.image_size for r in results], dtype=np.int32)),
    ]
