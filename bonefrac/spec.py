"""One spec per served model: it drives both the export and the generated ``config.pbtxt`` files.

Pure Python (no torch), so the serving side can read it too. A spec is stored as JSON in its
ensemble's ``config.pbtxt`` (parameter ``spec``), so a repository describes itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

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


def conf_threshold_ok(value: float) -> bool:
    """Whether ``value`` is a valid score threshold: in ``[0, 1]``."""
    return 0.0 <= value <= 1.0


def iou_threshold_ok(value: float) -> bool:
    """Whether ``value`` is a valid NMS IoU threshold: in ``(0, 1]``."""
    return 0.0 < value <= 1.0


def check_thresholds(
    *, conf_threshold: float | None = None, iou_threshold: float | None = None
) -> None:
    """The one check of detection thresholds (None: not given, nothing to check).

    Raises:
        ValueError: naming the threshold, its range and the value given.
    """
    if conf_threshold is not None and not conf_threshold_ok(conf_threshold):
        raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
    if iou_threshold is not None and not iou_threshold_ok(iou_threshold):
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")


#: How the ``cpu`` profile serves a model: see :class:`BatchingSpec`.
CPU_LAYOUTS = ("ensemble", "single")


@dataclass(frozen=True)
class BatchingSpec:
    """Dynamic batching and instances.

    Defaults, and why (CPU profile, 2 cores), measured by the tuning sweep of ``make bench``
    (YOLO11 320 px, idle 2-core machines, 2026-11-24 and 2026-11-30; ``benchmarks/RESULTS.md``):
        * ``detector_instances=2``, ``detector_threads=1``, ``detector_solo_threads=2``,
          ``detector_spin=False``: two ONNX Runtime sessions of one thread keep both cores busy
          under load without oversubscribing them; a detector run that finds no other run of
          the server in progress, neither at its start nor at its detector step (a lone
          request), uses a second session per instance with 2 threads that spin-wait while it
          runs and stop when it ends (one-model layout only; :class:`bonefrac.runtime.CoreGate`;
          side by side, 2026-11-30: p50 at concurrency 1 about 1.5 ms lower than without
          spinning, and at concurrency 8 a quarter as many 2-thread runs as with the check at
          the detector step alone). Without
          spin-waiting the sessions share the cores with each other and with the Python
          pre/post-processing. Fixed 2 x 2 threads gives the same lone-request latency but
          oversubscribes the cores under load (a higher p99); fixed 2 x 1 thread makes a lone
          request slower (``make bench``'s tuning sweep has all three side by side).
        * ``max_batch_size=4``, ``preferred_batch_sizes=(2,)``, ``max_queue_delay_us=0``:
          no delay costs a lone request nothing (p50 17.7 vs 20.2 ms at concurrency 1 with a
          2 ms delay) while queued requests still batch under load. Capping batches at 4 or 8
          is a tie within this machine's noise (concurrency 8: 77.1 vs 71.4 requests/s in one
          run, 75.3 vs 78.5 in the next); larger batches do not raise CPU throughput. With 2
          as the only preferred size, Triton's batcher forms batches of 2 from a queue of
          single-image requests (a request of up to 4 images still fits): a request waits
          behind less work, which cuts the p99 under load for a few per cent of throughput
          (the tuning sweep has both).
        * ``preprocess_instances=2``: decoding runs in parallel with inference.
        * ``gpu_instances=2``: on a GPU, two instances overlap copies with compute.
        * ``max_queue_size=64``: a bounded queue in front of every model. Past it Triton rejects
          at once with UNAVAILABLE ("exceeds maximum queue size") instead of letting latency
          grow without bound; clients retry with backoff (about 2 s of work queued on 2 CPU
          cores).
        * ``cpu_layout``: how the ``cpu`` profile serves the model clients call (GPU profiles
          always use the ensemble). ``"ensemble"``: a Triton ensemble of three Python-backend
          models (pre-processing, ONNX Runtime detector, post-processing), three queues and two
          extra process hops per request. ``"single"``: one Python-backend model does all three
          (``detector_instances`` instances of ``detector_threads`` ONNX Runtime threads, the
          detector's dynamic batching), per-step times on Triton's metrics port; the step
          models stay in the repository for direct calls. ``"single"`` is the default: side by
          side in one run (YOLO11 320 px, 2 busy cores, 2026-11-30) it served more requests/s
          with a lower p99 at concurrency 4 and 8, and a lone request no slower; the tuning
          sweep of ``make bench`` (idle, 2026-11-30) agrees: with 2 instances x 2 threads it
          beat the ensemble of the same settings at concurrency 1 and 4 and tied at 8.
        * ``detector_solo_threads``: in the one-model layout, the ONNX Runtime threads of a
          detector run that finds no other run of the server in progress (at its start and at
          its detector step); under load every
          instance keeps to its ``detector_threads``. 0 (off) or not more than
          ``detector_threads``: one session per instance.
    """

    max_batch_size: int = 4
    preferred_batch_sizes: tuple[int, ...] = (2,)
    max_queue_delay_us: int = 0
    detector_instances: int = 2
    detector_threads: int = 1
    detector_spin: bool = False
    detector_solo_threads: int = 2
    preprocess_instances: int = 2
    postprocess_instances: int = 1
    gpu_instances: int = 2
    max_queue_size: int = 64
    cpu_layout: str = "single"

    def __post_init__(self) -> None:
        if self.cpu_layout not in CPU_LAYOUTS:
            raise ValueError(
                f"unknown cpu_layout {self.cpu_layout!r}; choose one of {', '.join(CPU_LAYOUTS)}"
            )
        if self.detector_solo_threads < 0:
            raise ValueError(
                f"detector_solo_threads must be 0 (off) or more, got {self.detector_solo_threads}"
            )
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {self.max_queue_size}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred batch sizes {bad} are outside 1..max_batch_size ({self.max_batch_size})"
            )


class _StepModel:
    """The name of one step model of a spec's ensemble: ``<ensemble name>_<step>``, the step
    being the attribute's name (read-only)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.step = name

    def __get__(self, spec: DetectorSpec | None, owner: type | None = None) -> Any:
        return self if spec is None else f"{spec.name}_{self.step}"

    def __set__(self, spec: DetectorSpec, value: object) -> None:
        raise AttributeError(f"{self.step} is derived from the spec's name")


@dataclass(frozen=True)
class DetectorSpec:
    """What every served detector has. Served as the ensemble ``name`` with the steps
    ``<name>_preprocess``, ``<name>_detector`` and ``<name>_postprocess``.

    Attributes:
        class_names: the model's classes, in class-id order (no background).
        name: ensemble name clients call.
        conf_threshold: default minimum score (a request may pass its own).
        iou_threshold: default NMS IoU threshold (a request may pass its own).
        max_det: most detections per image.
        onnx_file: file name of the ONNX model in the detector's version folder.
        model_sha256: SHA-256 of the ONNX file, written by the export; clients use it to know
            which model answered (e.g. to cache evaluations).
        batching: dynamic batching and instances.
    """

    family: ClassVar[str] = ""
    #: The ensemble's three step models, ``<name>_preprocess``, ``<name>_detector`` and
    #: ``<name>_postprocess``.
    preprocess: ClassVar[_StepModel] = _StepModel()
    detector: ClassVar[_StepModel] = _StepModel()
    postprocess: ClassVar[_StepModel] = _StepModel()

    class_names: tuple[str, ...] = DATASET_CLASSES
    name: str = ""
    conf_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 300
    onnx_file: str = "model.onnx"
    model_sha256: str = ""
    batching: BatchingSpec = field(default_factory=BatchingSpec)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if not self.name:
            object.__setattr__(self, "name", self.family)
        check_thresholds(conf_threshold=self.conf_threshold, iou_threshold=self.iou_threshold)

    @property
    def num_classes(self) -> int:
        """How many classes the model has (no background)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_sha256(self, sha256: str) -> DetectorSpec:
        return replace(self, model_sha256=sha256)


@dataclass(frozen=True)
class Yolo11Spec(DetectorSpec):
    """An Ultralytics YOLO11 detector.

    Attributes:
        imgsz: square letterbox side in pixels (a multiple of 32).
    """

    family: ClassVar[str] = "yolo11"
    imgsz: int = 640

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")


FRCNN_ARCHS = ("mobilenet_v3_fpn", "r50_fpn_v2")


def _frcnn_batching() -> BatchingSpec:
    # The exported graph takes one image of any size: no batching, one image per call.
    return BatchingSpec(max_batch_size=1, preferred_batch_sizes=(), max_queue_delay_us=0)


@dataclass(frozen=True)
class FrcnnSpec(DetectorSpec):
    """A torchvision Faster R-CNN detector. The graph resizes (shorter side to ``min_size``,
    longer side at most ``max_size``) and normalises inside; pre-processing only decodes and
    shrinks very large images to ``max_input_side`` first.

    Attributes:
        arch: ``mobilenet_v3_fpn`` or ``r50_fpn_v2``.
        min_size: the graph's target shorter side, pixels.
        max_size: the graph's cap on the longer side, pixels.
        max_input_side: images are shrunk to this longer side before the graph (saves copying
            pixels the graph would discard).
        rpn_pre_nms_top_n: region proposals kept per feature level before the RPN's NMS, at
            serve time (torchvision's default: 1000).
        rpn_post_nms_top_n: region proposals kept after the RPN's NMS, at serve time: every one
            is pooled and run through the box head, most of the graph's time past the backbone.
            torchvision's default is 1000; 100 cut the RoI heads' time about 5x with valid AP50
            0.0101 vs 0.0073 (``benchmarks/README.md``, "Faster R-CNN: where the time goes").
            Graphs exported before this field existed used 1000.
        score_floor: the graph drops detections scoring below this (torchvision's
            ``box_score_thresh``); the served threshold is applied after the graph, and the
            evaluator needs the low-scoring tail. At most ``max_det`` detections per image.
    """

    family: ClassVar[str] = "frcnn"
    conf_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_det: int = 100
    arch: str = "mobilenet_v3_fpn"
    min_size: int = 512
    max_size: int = 640
    max_input_side: int = 1333
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 100
    score_floor: float = 0.001
    batching: BatchingSpec = field(default_factory=_frcnn_batching)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arch not in FRCNN_ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(FRCNN_ARCHS)}")
        if not 32 <= self.min_size <= self.max_size <= self.max_input_side:
            raise ValueError("need 32 <= min_size <= max_size <= max_input_side")
        if not 1 <= self.rpn_post_nms_top_n <= self.rpn_pre_nms_top_n:
            raise ValueError("need 1 <= rpn_post_nms_top_n <= rpn_pre_nms_top_n")
        if not conf_threshold_ok(self.score_floor):
            raise ValueError(f"score_floor must be in [0, 1], got {self.score_floor}")
        if self.batching.max_batch_size != 1:
            raise ValueError("the Faster R-CNN graph takes one image per call: max_batch_size 1")


SPECS: dict[str, type[DetectorSpec]] = {"yolo11": Yolo11Spec, "frcnn": FrcnnSpec}


def spec_from_dict(data: dict[str, Any]) -> DetectorSpec:
    """Rebuild a spec from :meth:`DetectorSpec.to_dict` output.

    Raises:
        ValueError: unknown family or fields.
    """
    data = dict(data)
    family = data.pop("family", "")
    if family not in SPECS:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(SPECS)}")
    cls = SPECS[family]
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {family} spec fields: {sorted(unknown)}")
    batching = data.pop("batching", None)
    if batching is not None:
        batching["preferred_batch_sizes"] = tuple(batching.get("preferred_batch_sizes", ()))
        data["batching"] = BatchingSpec(**batching)
    data["class_names"] = tuple(data.get("class_names", ()))
    return cls(**data)


def spec_from_json(text: str) -> DetectorSpec:
    return spec_from_dict(json.loads(text))
