"""Export trained detectors to ONNX and write them into a Triton model repository.

The spec and config generation (:mod:`bonefrac.spec`, :mod:`bonefrac.export.triton_config`)
are pure Python. The exporters themselves need the export extras: ``pip install 'bonefrac[export]'``
(torch, torchvision, ultralytics, onnx); they import them only when called.
"""

from bonefrac.spec import DATASET_CLASSES, BatchingSpec, Yolo11Spec

__all__ = ["DATASET_CLASSES", "BatchingSpec", "Yolo11Spec"]
