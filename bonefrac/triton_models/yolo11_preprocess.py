"""YOLO11 pre-processing: encoded image bytes -> letterboxed detector input.

Input ``image`` (BYTES ``[1]``): JPEG/PNG/... bytes. Outputs ``images`` (FP32 ``[3, S, S]``, RGB
in [0, 1]) and ``letterbox`` (FP32 ``[6]``: gain_x, gain_y, pad_left, pad_top, height, width). The
processing itself is ``bonefrac.processing``, shared with the client and the evaluator.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from bonefrac.processing import preprocess_yolo
from bonefrac.triton_models._support import error_response, model_parameters, required_parameter


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = model_parameters(json.loads(args["model_config"]))
        self.imgsz = int(required_parameter(params, "imgsz", model=self.name))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
                tensors, transforms = [], []
                for item in encoded.reshape(encoded.shape[0], -1)[:, 0]:
                    tensor, transform = preprocess_yolo(bytes(item), size=self.imgsz)
                    tensors.append(tensor)
                    transforms.append(transform.to_array())
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("images", np.stack(tensors)),
                            pb_utils.Tensor("letterbox", np.stack(transforms)),
                        ]
                    )
                )
            except Exception as exc:  # one bad image fails its own request only
                responses.append(error_response(pb_utils, exc, model=self.name))
        return responses
