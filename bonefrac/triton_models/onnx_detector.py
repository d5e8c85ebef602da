"""Detector for the CPU profile: an ONNX model run by ONNX Runtime inside the Python backend.

Requests that dynamic batching groups together are run as one ONNX Runtime batch (grouped by
input shape); a malformed request fails alone. GPU profiles replace this model with Triton's
``onnxruntime_onnx`` or ``tensorrt_plan`` platform and the same inputs and outputs.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from bonefrac.runtime import OnnxDetector
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
        self.detector = OnnxDetector(
            path,
            threads=int(params.get("intra_op_threads", "0") or 0),
            spin=params.get("allow_spinning", "1") != "0",
        )
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # input shape -> [(request index, array)]
        for i, request in enumerate(requests):
            try:
                array = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                self.detector.check_input(array)
                groups.setdefault(array.shape[1:], []).append((i, array))
            except Exception as exc:
                responses[i] = error_response(pb_utils, exc, model=self.name)
        for members in groups.values():
            try:
                outputs = self.detector.run(np.concatenate([a for _, a in members]))
            except Exception as exc:
                for i, _ in members:
                    responses[i] = error_response(pb_utils, exc, model=self.name)
                continue
            start = 0
            for i, array in members:
                part = outputs[start : start + array.shape[0]]
                start += array.shape[0]
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.output_name, part)]
                )
        return responses
