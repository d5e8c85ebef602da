"""Train Ultralytics YOLO11 from a model config (no pretrained weights), offline, reproducibly."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bonefrac.train import TrainError


@dataclass(frozen=True)
class Yolo11TrainConfig:
    """Everything that defines a YOLO11 training run; saved next to its weights.

    Attributes:
        data: the dataset's ``data.yaml``.
        model: model config (``yolo11n.yaml`` ... ``yolo11x.yaml``): weights start random.
        imgsz: training and serving letterbox side, pixels.
        epochs: training epochs.
        batch: images per batch.
        seed: seed of initialisation, augmentation and data order.
        threads: torch CPU threads.
        workers: data-loader worker processes.
        patience: stop after this many epochs without improvement on valid.
        project: folder that holds runs.
        name: this run's folder name inside ``project``.
    """

    data: str
    model: str = "yolo11n.yaml"
    imgsz: int = 320
    epochs: int = 40
    batch: int = 16
    seed: int = 0
    threads: int = 2
    workers: int = 2
    patience: int = 100
    project: str = "runs/train"
    name: str = "yolo11n"

    @property
    def run_dir(self) -> Path:
        return Path(self.project).resolve() / self.name


def _prepare(threads: int):
    from bonefrac.export._common import require_extras

    require_extras(("torch", "ultralytics"), extra="train", purpose="training", error=TrainError)
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline(threads=threads)
    from ultralytics.utils import torch_utils

    # Ultralytics resets torch to cpu_count - 1 threads when it selects the CPU.
    torch_utils.NUM_THREADS = threads


def train_yolo11(config: Yolo11TrainConfig, *, resume: bool = False) -> Path:
    """Train, or resume the run in ``config.run_dir``; returns the best checkpoint.

    Raises:
        TrainError: missing extras, dataset or checkpoint to resume.
    """
    _prepare(config.threads)
    from ultralytics import YOLO

    data = Path(config.data).resolve()
    if not data.is_file():
        raise TrainError(f"dataset file {data} does not exist")
    run_dir = config.run_dir
    last = run_dir / "weights" / "last.pt"
    started = time.time()
    if resume:
        if not last.is_file():
            raise TrainError(f"nothing to resume: {last} does not exist")
        YOLO(str(last)).train(resume=True)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        _save_config(config, run_dir)
        model = YOLO(config.model, task="detect")
        model.train(
            data=str(data),
            epochs=config.epochs,
            imgsz=config.imgsz,
            batch=config.batch,
            seed=config.seed,
            deterministic=True,
            workers=config.workers,
            device="cpu",
            amp=False,
            pretrained=False,
            patience=config.patience,
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
            plots=True,
            verbose=True,
        )
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise TrainError(f"training ended without {best}")
    _record_time(run_dir, time.time() - started)
    return best


def _save_config(config: Yolo11TrainConfig, run_dir: Path) -> None:
    import torch
    import ultralytics

    record = {
        "config": asdict(config),
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (run_dir / "bonefrac_train.json").write_text(json.dumps(record, indent=2) + "\n")


def _record_time(run_dir: Path, seconds: float) -> None:
    path = run_dir / "bonefrac_train.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("sessions_s", []).append(round(seconds, 1))
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(record, indent=2) + "\n")
