"""The Triton Python-backend models of bonefrac.

Each ``model_repository/<model>/<version>/model.py`` is a one-line entry point that imports its
``TritonPythonModel`` from a module here, so the code is versioned, linted and tested with the
package. These modules import ``triton_python_backend_utils``, which exists only inside Triton's
Python backend stub: import them there, not elsewhere.

* ``preprocess``: encoded bytes -> detector input + transform (YOLO11 letterbox, or the shrunk
  image for Faster R-CNN, as the model's spec says).
* ``onnx_detector``: ONNX Runtime inside the Python backend (the CPU profile's detector).
* ``postprocess``: raw output -> boxes in original pixels, scores, class ids and names.
* ``fused``: the three steps in one model (the ``cpu`` profile's one-model layout, spec
  ``batching.cpu_layout="single"``), with per-step times as custom metrics.

The per-request work of each step is written once, in ``_steps``, and called by both layouts.
"""
