"""Training (``bonefrac train``): Ultralytics YOLO11 (and, later, torchvision Faster R-CNN) on a
YOLO-format dataset, offline and reproducible, ending in an export through ``bonefrac.export``.

Needs the train extras: ``pip install 'bonefrac[train]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from bonefrac.errors import BonefracError

RECORD = "bonefrac_train.json"
C = TypeVar("C")


class TrainError(BonefracError):
    """Training could not start or finish."""


def record_config(folder: str | Path) -> dict:
    """The training configuration in a run or snapshot folder's record.

    Raises:
        TrainError: the folder holds no record.
    """
    record = Path(folder) / RECORD
    if not record.is_file():
        raise TrainError(f"{record} does not exist: not a training snapshot folder")
    return json.loads(record.read_text()).get("config", {})


def snapshot_config(cls: type[C], folder: str | Path, **overrides) -> C:
    """The config dataclass ``cls`` a snapshot's run was started with, mirroring into it.

    ``overrides`` (None: keep the record's) change what may differ on another machine: the
    device, worker and thread counts, where the dataset is.
    """
    fields = cls.__dataclass_fields__
    saved = record_config(folder)
    config = {k: v for k, v in saved.items() if k in fields}
    config.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise TrainError(f"{cls.__name__} has no option {', '.join(unknown)}")
    return cls(**{**config, "snapshot": str(folder)})
