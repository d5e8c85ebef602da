"""Detector for the CPU profile: an ONNX model run by ONNX Runtime inside the Python backend.

Requests that dynamic batching groups together are run as one ONNX Runtime batch (grouped by
input shape); a malformed request fails alone. GPU profiles replace this model with Triton's
``onnxruntime_onnx`` or ``tensorrt_plan`` platform and the same inputs and outputs.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from bonefrac.triton_models._steps import load_detector, run_grouped
from bonefrac.triton_models._support import error_response, model_parameters, required_parameter


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        path = os.path.join(
            args["model_repository"],
            args["model_version"],
            required_parameter(params, "onnx_file", model=self.name),
        )
        self.detector = load_detector(path, params)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        inputs, failed = {}, {}
        for i, request in enumerate(requests):
            try:
                inputs[i] = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            except Exception as exc:
                failed[i] = exc
        results = {**run_grouped(self.detector, inputs), **failed}
        return [self._response(results[i]) for i in range(len(requests))]

    def _response(self, result):
        if isinstance(result, Exception):
            return error_response(pb_utils, result, model=self.name)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(self.output_name, result)]
        )
