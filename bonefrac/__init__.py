"""bonefrac: bone-fracture detection on X-ray images, served by NVIDIA Triton Inference Server.

Subpackages: ``bonefrac.client`` (gRPC client and CLI), ``bonefrac.export`` (ONNX export and
Triton configs), ``bonefrac.ui`` (Gradio front end), ``bonefrac.benchmarks`` (load generator).
Core modules: ``bonefrac.processing`` (pre/post-processing, pure numpy), ``bonefrac.detections``
(the detection type), ``bonefrac.runtime`` (ONNX Runtime and the in-process pipeline),
``bonefrac.server`` (tritonserver launcher).
"""

from bonefrac.detections import Detections

__version__ = "0.1.0"

__all__ = ["Detections", "__version__"]
