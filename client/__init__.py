"""gRPC client of bonefrac's Triton ensembles.

Example::

    from bonefrac.client import DetectionClient

    with DetectionClient("127.0.0.1:8001", model="yolo11") as client:
        detections = client.detect(open("wrist.jpg", "rb").read(), conf_threshold=0.25)
        print(detections.xyxy, detections.scores, detections.class_names)
"""

from bonefrac.client._balance import (
    AsyncBalancedDetectionClient,
    BalancedDetectionClient,
    connect,
    connect_async,
    parse_servers,
)
from bonefrac.client._errors import (
    ClientError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from bonefrac.client._grpc import (
    NO_RETRY,
    AsyncDetectionClient,
    DetectionClient,
    RetryPolicy,
    ServerStatus,
)
from bonefrac.detections import Detections

__all__ = [
    "AsyncBalancedDetectionClient",
    "BalancedDetectionClient",
    "connect",
    "connect_async",
    "parse_servers",
    "AsyncDetectionClient",
    "ClientError",
    "DetectionClient",
    "Detections",
    "InvalidInputError",
    "ModelNotFoundError",
    "NO_RETRY",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerOverloadedError",
    "ServerStatus",
    "ServerUnavailableError",
]
