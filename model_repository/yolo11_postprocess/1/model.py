"""Triton entry point; the model's code is bonefrac.triton_models.yolo11_postprocess."""

from bonefrac.triton_models.yolo11_postprocess import TritonPythonModel  # noqa: F401
