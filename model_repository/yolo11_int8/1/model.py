"""Triton entry point; the model's code is bonefrac.triton_models.fused."""

from bonefrac.triton_models.fused import TritonPythonModel  # noqa: F401
