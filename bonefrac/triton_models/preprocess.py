"""Pre-processing: encoded image bytes -> detector input and its transform.

Input ``image`` (BYTES ``[1]``): JPEG/PNG/... bytes. Outputs ``images`` (FP32 ``[3, H, W]``, RGB in
[0, 1]: letterboxed for YOLO11, the shrunk image for Faster R-CNN) and ``letterbox`` (FP32 ``[6]``:
the image's input transform, ``bonefrac.processing.InputTransform``: gain_x, gain_y, pad_left,
pad_top, height, width; for Faster R-CNN the padding is zero). The model's spec (config parameter
``spec``) says which; the processing is ``bonefrac.pipeline.preprocessor``, shared with the client.
"""

import json

import triton_python_backend_utils as pb_utils

from bonefrac.pipeline import preprocessor
from bonefrac.spec import spec_from_json
from bonefrac.triton_models._steps import preprocess_request
from bonefrac.triton_models._support import error_response, model_parameters, required_parameter


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = model_parameters(json.loads(args["model_config"]))
        self.preprocess = preprocessor(
            spec_from_json(required_parameter(params, "spec", model=self.name))
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                images, transforms = preprocess_request(pb_utils, request, self.preprocess)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("images", images),
                            pb_utils.Tensor("letterbox", transforms),
                        ]
                    )
                )
            except Exception as exc:  # one bad image fails its own request only
                responses.append(error_response(pb_utils, exc, model=self.name))
        return responses
