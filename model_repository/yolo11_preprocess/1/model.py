"""Triton entry point; the model's code is bonefrac.triton_models.yolo11_preprocess."""

from bonefrac.triton_models.yolo11_preprocess import TritonPythonModel  # noqa: F401
