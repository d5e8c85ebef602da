"""One spec per served model: it drives both the export and the generated ``config.pbtxt`` files.

Pure Python (no torch), so the serving side can read it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: The classes of the bundled dataset (``data.yaml`` of the bone-fracture-yolo8 export).
DATASET_CLASSES: tuple[str, ...] = (
    "elbow positive",
    "fingers positive",
    "forearm fracture",
    "humerus fracture",
    "humerus",
    "shoulder fracture",
    "wrist positive",
)


@dataclass(frozen=True)
class BatchingSpec:
    """Dynamic batching and instances of the detector.

    Defaults, and why (CPU profile, 2 cores):
        * ``max_batch_size=8``: the most images one ONNX Runtime call takes; larger batches do
          not raise CPU throughput, they only add latency.
        * ``preferred_batch_sizes=(2, 4, 8)``: form a batch as soon as a useful size is queued.
        * ``max_queue_delay_us=2000``: wait at most 2 ms for a batch to fill (a CPU inference
          takes about 30 ms, so this costs little at low load and batches well at high load).
        * ``detector_instances=1`` with ``detector_threads=2``: one session using both cores
          beats two sessions fighting over them.
        * ``preprocess_instances=2``: decoding runs in parallel with inference.
    """

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (2, 4, 8)
    max_queue_delay_us: int = 2000
    detector_instances: int = 1
    detector_threads: int = 2
    preprocess_instances: int = 2
    postprocess_instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred batch sizes {bad} are outside 1..max_batch_size ({self.max_batch_size})"
            )


@dataclass(frozen=True)
class Yolo11Spec:
    """A YOLO11 detector served as the ensemble ``name`` with steps ``<name>_preprocess``,
    ``<name>_detector`` and ``<name>_postprocess``.

    Attributes:
        name: ensemble name clients call.
        class_names: the model's classes, in class-id order.
        imgsz: square letterbox side in pixels (a multiple of 32).
        conf_threshold: default minimum score (a request may pass its own).
        iou_threshold: default NMS IoU threshold (a request may pass its own).
        max_det: most detections per image.
        onnx_file: file name of the ONNX model in the detector's version folder.
        model_sha256: SHA-256 of the ONNX file, written by the export; clients use it to know
            which model answered (e.g. to cache evaluations).
        batching: dynamic batching and instances.
    """

    class_names: tuple[str, ...] = DATASET_CLASSES
    name: str = "yolo11"
    imgsz: int = 640
    conf_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 300
    onnx_file: str = "model.onnx"
    model_sha256: str = ""
    batching: BatchingSpec = field(default_factory=BatchingSpec)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if not 0.0 <= self.conf_threshold <= 1.0 or not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError("conf_threshold must be in [0, 1] and iou_threshold in (0, 1]")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocess(self) -> str:
        return f"{self.name}_preprocess"

    @property
    def detector(self) -> str:
        return f"{self.name}_detector"

    @property
    def postprocess(self) -> str:
        return f"{self.name}_postprocess"

    def to_dict(self) -> dict:
        return asdict(self)
