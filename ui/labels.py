"""The truth beside the model: an image's YOLO label file read into boxes, and which findings hit
a label (the evaluator's own criterion: same class under the protocol, IoU >= 0.5, each label
found at most once, greedily in descending score order)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonefrac.dataset import DatasetError, make_protocol, parse_label_file
from bonefrac.detections import Detections
from bonefrac.metrics import ImageEval, iou_matrix, match_detections
from bonefrac.spec import DATASET_CLASSES

#: IoU at which a finding hits a label.
HIT_IOU = 0.5
#: A label file is text of a few lines; anything larger is not one.
MAX_LABEL_BYTES = 1_000_000


@dataclass(frozen=True)
class Labels:
    """The labelled objects of one image.

    Attributes:
        xyxy: ``(n, 4)`` float64 boxes in pixels of the image (polygons become their bounding
            boxes).
        class_names: ``n`` dataset class names.
    """

    xyxy: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Match:
    """Findings against labels.

    Attributes:
        hits: ``(m,)`` bool, True where the detection hit a label.
        found: ``(n,)`` bool, True where a hitting detection of the label's class overlaps the
            label at IoU >= 0.5 (labels not found were missed).
    """

    hits: np.ndarray
    found: np.ndarray


def read_labels(path: str | Path, *, image_size: tuple[int, int]) -> Labels:
    """Read a YOLO label file (``cls x1 y1 ... xn yn`` polygons or ``cls cx cy w h`` boxes,
    normalised, the dataset's class ids) for an image of ``(height, width)`` pixels.

    Raises:
        ValueError: the file is too large or not text.
        DatasetError: a malformed line (the message names the line).
    """
    file = Path(path)
    if file.stat().st_size > MAX_LABEL_BYTES:
        raise ValueError(f"{file.name} is not a YOLO label file: it is larger than 1 MB")
    try:
        file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{file.name} is not a YOLO label file (text lines 'class x1 y1 x2 y2 ...')"
        ) from None
    try:
        boxes, ids = parse_label_file(file, num_classes=len(DATASET_CLASSES))
    except DatasetError as exc:
        # The message names the uploaded file by its temporary path: keep the name only.
        raise DatasetError(str(exc).replace(str(file), file.name)) from None
    height, width = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    return Labels(boxes * scale, tuple(DATASET_CLASSES[i] for i in ids))


def match(det: Detections, labels: Labels, *, protocol: str) -> Match:
    """Which detections hit a label and which labels were found, under a class protocol
    (``7class``, ``6class`` or ``agnostic``).

    Raises:
        DatasetError: a detection's class is not a dataset class.
    """
    proto = make_protocol(protocol, DATASET_CLASSES)
    gt_classes = proto.map_names(labels.class_names)
    det_classes = proto.map_names(det.class_names)
    image = ImageEval(labels.xyxy, gt_classes, det.xyxy, det.scores, det_classes)
    hits = match_detections(image, iou_threshold=HIT_IOU)
    overlaps = iou_matrix(det.xyxy[hits], labels.xyxy) >= HIT_IOU
    same = det_classes[hits][:, None] == gt_classes[None, :]
    return Match(hits=hits, found=(overlaps & same).any(axis=0))
