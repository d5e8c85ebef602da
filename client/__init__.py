"""gRPC client of bonefrac's Triton ensembles.

Example::

    from bonefrac.client import DetectionClient

    with DetectionClient("127.0.0.1:8001", model="yolo11") as client:
        detections = client.detect(open("wrist.jpg", "rb").read(), conf_threshold=0.25)
        print(detections.xyxy, detections.scores, detections.class_names)
"""

from bonefrac.client._errors import (
    ClientError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from bonefrac.client._grpc import AsyncDetectionClient, DetectionClient, ServerStatus
from bonefrac.detections import Detections

__all__ = [
    "AsyncDetectionClient",
    "ClientError",
    "DetectionClient",
    "Detections",
    "InvalidInputError",
    "ModelNotFoundError",
    "RequestTimeoutError",
    "ServerStatus",
    "ServerUnavailableError",
]
