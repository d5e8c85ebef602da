"""The one detection type used from end to end: Triton models, client, UI, evaluator, benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: A score or IoU threshold of one request; None: the model's default.
Threshold = float | None


@dataclass(frozen=True)
class Detections:
    """Detections on one image, in pixels of the original (EXIF-oriented) image.

    Attributes:
        xyxy: ``(n, 4)`` float32 boxes ``[x1, y1, x2, y2]`` in original-image pixels, clipped to
            the image.
        scores: ``(n,)`` float32 confidences in ``[0, 1]``, sorted in descending order.
        class_ids: ``(n,)`` int32: each detection's class, an index of the model's classes.
        class_names: ``(n,)`` strings: each detection's class name (``class_names[i]`` names
            ``class_ids[i]``); not the model's class list. Empty when unknown.
        image_size: ``(height, width)`` of the original image in pixels, after EXIF orientation.

    Raises:
        ValueError: if the arrays do not have matching, well-formed shapes.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = field(default=())
    image_size: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        n = xyxy.shape[0]
        if scores.shape[0] != n or class_ids.shape[0] != n:
            raise ValueError(
                f"Detections: got {n} boxes, {scores.shape[0]} scores and "
                f"{class_ids.shape[0]} class ids; they must have the same length"
            )
        names = tuple(str(name) for name in self.class_names)
        if names and len(names) != n:
            raise ValueError(f"Detections: got {len(names)} class names for {n} boxes")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls, *, image_size: tuple[int, int] = (0, 0)) -> Detections:
        """An image with no detections."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
            class_names=(),
            image_size=image_size,
        )

    @classmethod
    def from_arrays(
        cls,
        *,
        xyxy: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        names: Sequence[str],
        image_size: tuple[int, int],
    ) -> Detections:
        """Build detections and look their class names up in ``names``, the model's classes in
        class-id order.

        Raises:
            ValueError: if a class id is outside ``names``.
        """
        ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(names)):
            raise ValueError(
                f"class id {int(ids.max())} is outside the model's {len(names)} class names"
            )
        return cls(
            xyxy=xyxy,
            scores=scores,
            class_ids=ids,
            class_names=tuple(names[i] for i in ids),
            image_size=image_size,
        )

    def filter(self, *, min_score: float) -> Detections:
        """The detections whose score is at least ``min_score``."""
        keep = self.scores >= min_score
        return Detections(
            xyxy=self.xyxy[keep],
            scores=self.scores[keep],
            class_ids=self.class_ids[keep],
            class_names=tuple(n for n, k in zip(self.class_names, keep) if k),
            image_size=self.image_size,
        )

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per detection: ``box`` (xyxy pixels), ``score``, ``class_id``,
        ``class_name``."""
        names = self.class_names or tuple(str(i) for i in self.class_ids)
        return [
            {
                "box": [round(float(v), 3) for v in box],
                "score": round(float(score), 6),
                "class_id": int(cid),
                "class_name": name,
            }
            for box, score, cid, name in zip(self.xyxy, self.scores, self.class_ids, names)
        ]


@runtime_checkable
class Detector(Protocol):
    """What detects fractures on one encoded image, wherever it runs: the in-process pipeline
    (:class:`bonefrac.pipeline.InProcessPipeline`) and the gRPC clients of one server or several
    (:class:`bonefrac.client.DetectionClient`, :class:`bonefrac.client.BalancedDetectionClient`).
    """

    def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """Detect fractures on one encoded image (JPEG, PNG, ... file bytes).

        Args:
            data: the image file's bytes.
            conf_threshold: minimum score in ``[0, 1]`` (the model's default when None).
            iou_threshold: NMS IoU threshold in ``(0, 1]`` (the model's default when None).

        Returns:
            The detections, in pixels of the original image.

        Raises:
            ValueError: a threshold out of range (checked by
                :func:`bonefrac.spec.check_thresholds`), or an image that cannot be read.
        """
        ...
