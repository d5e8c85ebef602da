"""Triton entry point; the model's code is bonefrac.triton_models.onnx_detector."""

from bonefrac.triton_models.onnx_detector import TritonPythonModel  # noqa: F401
