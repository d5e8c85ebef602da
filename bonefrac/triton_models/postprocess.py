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

import triton_python_backend_utils as pb_utils

from bonefrac.pipeline import postprocessor
from bonefrac.spec import spec_from_json
from bonefrac.triton_models._steps import postprocess_request
from bonefrac.triton_models._support import error_response, model_parameters, required_parameter


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
                outputs = postprocess_request(
                    pb_utils,
                    request,
                    raw=pb_utils.get_input_tensor_by_name(request, self.raw_name).as_numpy(),
                    transforms=pb_utils.get_input_tensor_by_name(request, "letterbox").as_numpy(),
                    spec=self.spec,
                    postprocess=self.postprocess,
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:
                responses.append(error_response(pb_utils, exc, model=self.name))
        return responses
