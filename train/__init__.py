"""Training (``bonefrac train``): Ultralytics YOLO11 (and, later, torchvision Faster R-CNN) on a
YOLO-format dataset, offline and reproducible, ending in an export through ``bonefrac.export``.

Needs the train extras: ``pip install 'bonefrac[train]'``.
"""

from bonefrac.errors import BonefracError


class TrainError(BonefracError):
    """Training could not start or finish."""
