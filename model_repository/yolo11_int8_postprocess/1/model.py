"""Triton entry point; the model's code is bonefrac.triton_models.postprocess."""

from bonefrac.triton_models.postprocess import TritonPythonModel  # noqa: F401
