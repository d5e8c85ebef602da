"""Triton entry point; the model's code is bonefrac.triton_models.preprocess."""

from bonefrac.triton_models.preprocess import TritonPythonModel  # noqa: F401
