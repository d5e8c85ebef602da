"""Post-processing: raw detector output -> detections in original-image pixels.

Inputs: the detector's output (YOLO11 ``output0`` FP32 ``[4 + nc, anchors]``, or Faster R-CNN
``detections`` FP32 ``[n, 6]``), ``letterbox`` (FP32 ``[6]``: the image's input transform, a
``bonefrac.processing.InputTransform``), and optional ``conf_threshold`` /
``iou_threshold`` (FP32 ``[1]``). Outputs ``num_detections`` (INT32 ``[1]``), ``boxes`` (FP32
``[n, 4]`` xyxy pixels), ``scores`` (FP32 ``[n]``), ``class_ids`` (INT32 ``[n]``), ``class_names``
(BYTES ``[n]``) and ``image_size`` (INT32 ``[2]``: height, width); rows past ``num_detections``
are padding when several images share one request.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from bonefrac.pipeline import postprocessor
from bonefrac.processing import InputTransform
from bonefrac.spec import conf_threshold_ok, iou_threshold_ok, spec_from_json
from bonefrac.triton_models._support import (
    error_response,
    model_parameters,
    optional_per_item,
    pad_stack,
    required_parameter,
)


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.spec = spec_from_json(
            required_parameter(model_parameters(config), "spec", model=self.name)
        )
        self.postprocess = postprocessor(self.spec)
        self.raw_name = config["input"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, self.raw_name).as_numpy()
                transforms = pb_utils.get_input_tensor_by_name(request, "letterbox").as_numpy()
                batch = raw.shape[0]
                conf = optional_per_item(
                    pb_utils,
                    request,
                    "conf_threshold",
                    batch=batch,
                    default=self.spec.conf_threshold,
                    valid=conf_threshold_ok,
                )
                iou = optional_per_item(
                    pb_utils,
                    request,
                    "iou_threshold",
                    batch=batch,
                    default=self.spec.iou_threshold,
                    valid=iou_threshold_ok,
                )
                results = [
                    self.postprocess(
                        raw[b],
                        InputTransform.from_array(transforms[b]),
                        conf_threshold=conf[b],
                        iou_threshold=iou[b],
                    )
                    for b in range(batch)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=_pack(results)))
            except Exception as exc:
                responses.append(error_response(pb_utils, exc, model=self.name))
        return responses


def _pack(results):
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
