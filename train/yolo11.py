"""Train Ultralytics YOLO11 from a model config (no pretrained weights), offline, reproducibly."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
        device: ``"cpu"``, or a CUDA device index (``"0"``) on a GPU node.
        time_h: train for this many hours: Ultralytics fits the epoch count (and the learning
            rate schedule with it) to the time after every epoch. None: ``epochs`` as given.
        patience: stop after this many epochs without improvement on valid.
        project: folder that holds runs.
        name: this run's folder name inside ``project``.
        precision: ``"float32"``, or ``"bfloat16"``: autocast of the forward pass and loss
            (weights, optimizer and checkpoints stay float32/FP16 as usual); on a CPU with
            AVX-512 BF16 this halves the step time (``docs/train/speed.json``).
        cache: ``"ram"`` keeps the decoded, resized images in memory (no JPEG decoding after
            the first epoch), ``"disk"`` or ``""`` (decode every time).
        snapshot: a folder (committed with the repository) that receives a copy of the
            checkpoint (``checkpoint.pt``: FP16 weights, optimizer state, epoch and
            schedule), ``results.csv`` and ``args.yaml`` after every epoch, so that a run can
            resume on another machine: ``--resume`` starts from it when the run folder has no
            ``last.pt``.
    """

    data: str
    model: str = "yolo11n.yaml"
    imgsz: int = 320
    epochs: int = 40
    batch: int = 16
    seed: int = 0
    threads: int = 2
    workers: int = 2
    device: str = "cpu"
    time_h: float | None = None
    patience: int = 100
    project: str = "runs/train"
    name: str = "yolo11n"
    precision: str = "float32"
    cache: str = "ram"
    snapshot: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.project).resolve() / self.name


def _prepare(threads: int):
    from bonefrac.export._common import require_extras

    require_extras(("torch", "ultralytics"), extra="train", purpose="training", error=TrainError)
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline(threads=threads)
    from ultralytics.utils import torch_utils

    if not _have_polars():
        _read_results_without_polars()

    # Ultralytics resets torch to cpu_count - 1 threads when it selects the CPU.
    torch_utils.NUM_THREADS = threads
    _allow_bf16_autocast_on_cpu()


def _have_polars() -> bool:
    import importlib.util

    return importlib.util.find_spec("polars") is not None


def _read_results_without_polars() -> None:
    """Ultralytics reads ``results.csv`` back with polars (a 50 MB wheel) at every checkpoint;
    where it is not installed (a GPU node's own PyTorch image), read it with the csv module."""
    import csv

    from ultralytics.engine.trainer import BaseTrainer

    def read_results_csv(self) -> dict:
        try:
            with open(self.csv, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return {}
        return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

    BaseTrainer.read_results_csv = read_results_csv


def _allow_bf16_autocast_on_cpu() -> None:
    """Ultralytics' ``amp="bf16"`` is CUDA-only (it raises elsewhere); on the CPU, use torch's
    own bfloat16 autocast instead. Other requests go to Ultralytics' function unchanged."""
    import torch
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.utils.torch_utils import autocast as ultralytics_autocast

    def autocast(enabled, device: str = "cuda"):
        if device == "cpu" and enabled is torch.bfloat16:
            return torch.amp.autocast("cpu", dtype=torch.bfloat16)
        return ultralytics_autocast(enabled, device=device)

    trainer_module.autocast = autocast


def train_yolo11(
    config: Yolo11TrainConfig,
    *,
    resume: bool = False,
    callbacks: dict[str, Callable[[Any], None]] | None = None,
) -> Path:
    """Train, or resume the run in ``config.run_dir``; returns the best checkpoint.

    ``callbacks`` are added to Ultralytics' trainer (event name -> function of the trainer),
    e.g. ``{"on_fit_epoch_end": ...}``.

    Raises:
        TrainError: missing extras, dataset or checkpoint to resume.
    """
    _prepare(config.threads)
    from ultralytics import YOLO

    from bonefrac.train.speed import slow_bfloat16

    if warning := slow_bfloat16(config.precision, config.device):
        print(warning, flush=True)

    data = Path(config.data).resolve()
    if not data.is_file():
        raise TrainError(f"dataset file {data} does not exist")
    run_dir = config.run_dir
    last = run_dir / "weights" / "last.pt"
    started = time.time()
    if resume:
        if not last.is_file():
            restore_snapshot(config)
        _prepare_resume(config, last)
        model = YOLO(str(last))
        _add_callbacks(model, config, callbacks)
        model.train(
            # the path, not True: Ultralytics turns resume=True on a checkpoint without
            # optimizer state (stripped at the end of its schedule) into a new 100-epoch run
            resume=str(last),
            data=str(data),
            save_dir=str(run_dir),
            cache=_cache_arg(config.cache),
            workers=config.workers,
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        _save_config(config, run_dir)
        model = YOLO(config.model, task="detect")
        _add_callbacks(model, config, callbacks)
        model.train(
            data=str(data),
            epochs=config.epochs,
            imgsz=config.imgsz,
            batch=config.batch,
            seed=config.seed,
            deterministic=True,
            workers=config.workers,
            cache=_cache_arg(config.cache),
            device=config.device,
            amp="bf16" if config.precision == "bfloat16" else False,
            time=config.time_h,
            pretrained=False,
            patience=config.patience,
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
            plots=_have_polars(),
            verbose=True,
        )
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise TrainError(f"training ended without {best}")
    _record_time(run_dir, time.time() - started)
    return best


SNAPSHOT_FILES = {
    "weights/last.pt": "checkpoint.pt",
    "results.csv": "results.csv",
    "args.yaml": "args.yaml",
    "bonefrac_train.json": "bonefrac_train.json",
}


def _cache_arg(cache: str) -> str | bool:
    return cache if cache in ("ram", "disk") else False


def _add_callbacks(model, config: Yolo11TrainConfig, callbacks) -> None:
    """The snapshot mirror (after every epoch, when ``config.snapshot``), then the caller's."""
    if config.snapshot:
        model.add_callback("on_model_save", lambda trainer: save_snapshot(config))
    for event, function in (callbacks or {}).items():
        model.add_callback(event, function)


def save_snapshot(config: Yolo11TrainConfig) -> Path:
    """Copy the run's ``last.pt`` and records into the snapshot folder (atomically per file)."""
    import shutil

    snap = Path(config.snapshot)
    snap.mkdir(parents=True, exist_ok=True)
    for src, dst in SNAPSHOT_FILES.items():
        path = config.run_dir / src
        if path.is_file():
            tmp = snap / f".{dst}.tmp"
            shutil.copyfile(path, tmp)
            tmp.replace(snap / dst)
    scrub_snapshot(snap)
    return snap


PATH_ARGS = ("data", "project", "save_dir", "model", "resume")


def _relative(args: dict[str, Any]) -> dict[str, Any]:
    """Ultralytics' run arguments with this machine's absolute paths made relative to the
    working directory (the repository root), as the snapshot is committed."""
    out = dict(args)
    for key in PATH_ARGS:
        value = out.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            out[key] = os.path.relpath(value)
    return out


def scrub_snapshot(snap: Path) -> None:
    """No absolute paths of this machine in a committed snapshot: the checkpoint's
    ``train_args``, the models' arguments and the weights path a resume loaded them from
    (``pt_path``), and ``args.yaml`` get paths relative to the repository root."""
    import torch
    import yaml

    args_yaml = snap / "args.yaml"
    if args_yaml.is_file():
        args = yaml.safe_load(args_yaml.read_text())
        args_yaml.write_text(yaml.safe_dump(_relative(args), sort_keys=False))
    checkpoint = snap / "checkpoint.pt"
    if checkpoint.is_file():
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if isinstance(ckpt.get("train_args"), dict):
            ckpt["train_args"] = _relative(ckpt["train_args"])
        if isinstance(ckpt.get("git"), dict):  # Ultralytics records the repository's folder
            ckpt["git"] = {k: v for k, v in ckpt["git"].items() if k != "root"}
        for key in ("model", "ema"):  # the models carry the run's arguments too
            pt_path = getattr(ckpt.get(key), "pt_path", None)  # the weights a resume loaded
            if isinstance(pt_path, str) and os.path.isabs(pt_path):
                ckpt[key].pt_path = os.path.relpath(pt_path)
            args = getattr(ckpt.get(key), "args", None)
            if isinstance(args, dict):
                ckpt[key].args = _relative(args)
            elif args is not None:
                for name, value in _relative(vars(args)).items():
                    setattr(args, name, value)
        tmp = snap / ".checkpoint.pt.tmp"
        torch.save(ckpt, tmp)
        tmp.replace(checkpoint)


def restore_snapshot(config: Yolo11TrainConfig) -> None:
    """Seed an empty run folder from the committed snapshot (a new machine resumes from it)."""
    import shutil

    snap = Path(config.snapshot) if config.snapshot else None
    if snap is None or not (snap / "checkpoint.pt").is_file():
        raise TrainError(
            f"nothing to resume: {config.run_dir / 'weights' / 'last.pt'} does not exist"
            + (
                f" and {snap} has no checkpoint.pt"
                if snap
                else " (give --snapshot DIR to resume from a committed snapshot)"
            )
        )
    (config.run_dir / "weights").mkdir(parents=True, exist_ok=True)
    for src, dst in SNAPSHOT_FILES.items():
        if (snap / dst).is_file():
            shutil.copyfile(snap / dst, config.run_dir / src)


def _prepare_resume(config: Yolo11TrainConfig, last: Path) -> None:
    """Make the checkpoint resume in ``config.precision``, to ``config.epochs``, and record the
    resume.

    Ultralytics resumes with the arguments saved in the checkpoint and ignores a new ``amp`` or
    ``epochs``; a run started in bfloat16 would go on autocasting to bfloat16 on a CPU without
    bfloat16 instructions, where torch emulates it several times slower than float32 (7.6x for
    a step, ``docs/train/speed-avx2.json``). So both are written into the checkpoint itself.
    ``config.epochs`` other than the record's extends (or shortens) the schedule: the learning
    rate follows the new one from the next epoch. A checkpoint Ultralytics stripped at the end
    of its schedule (no optimizer state, epoch -1) goes on after the epochs its results hold,
    with the momentum restarted. The run's record gets a ``resumes`` entry (epoch, schedule,
    device, cores, precision), as a Faster R-CNN run's does.
    """
    import torch

    record_path = config.run_dir / "bonefrac_train.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    local: dict[str, Any] = {"amp": "bf16" if config.precision == "bfloat16" else False}
    if record and config.epochs != record["config"].get("epochs"):
        local.update(epochs=config.epochs, time=None)  # a schedule in epochs, not fitted to time
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    planned = ckpt["train_args"]["epochs"]
    if ckpt.get("epoch", -1) < 0:  # stripped: resume after the epochs its results hold
        ckpt["epoch"] = len(ckpt["train_results"]["epoch"]) - 1
    _set_args(ckpt, local)
    torch.save(ckpt, last)
    if record is None:
        return
    record.setdefault("resumes", []).append(
        {
            "after_epoch": int(ckpt["epoch"]) + 1,
            "epochs": int(ckpt["train_args"]["epochs"]),
            "planned_before": int(planned),
            "momentum_restarted": ckpt.get("optimizer") is None,
            "device": config.device,
            "cpus": os.cpu_count(),
            "precision": config.precision,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    record["config"]["epochs"] = config.epochs
    record_path.write_text(json.dumps(record, indent=2) + "\n")


def _save_config(config: Yolo11TrainConfig, run_dir: Path) -> None:
    import torch
    import ultralytics

    from bonefrac.train.speed import cpu_model

    machine = {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count()}
    if config.device != "cpu" and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(int(config.device.split(",")[0]))
    record = {
        "config": asdict(config),
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__},
        "machine": machine,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (run_dir / "bonefrac_train.json").write_text(json.dumps(record, indent=2) + "\n")


def _record_time(run_dir: Path, seconds: float) -> None:
    path = run_dir / "bonefrac_train.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("sessions_s", []).append(round(seconds, 1))
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(record, indent=2) + "\n")


def import_run(
    run_dir: str | Path, snapshot: str | Path, *, data: str, gpu: str | None = None
) -> Path:
    """Bring a finished run trained on another machine (a GPU node: ``train/gpu_run.sh``) into
    a snapshot folder: its ``best.pt`` as ``checkpoint.pt`` (FP16 weights, no optimizer: the
    schedule has ended), ``results.csv``, ``args.yaml`` and its record, with that machine's
    paths replaced by this repository's (``data``, ``runs/train``).

    Args:
        run_dir: the run folder as it came back (``weights/best.pt``, ``results.csv`` ...).
        snapshot: the folder to write, e.g. ``docs/train/yolo11n-640-gpu``.
        data: the dataset's ``data.yaml`` here, relative to the repository root.
        gpu: the GPU it trained on, where the record does not say (older records).

    Raises:
        TrainError: the run folder lacks its weights, results or record.
    """
    import shutil

    import yaml

    run_dir, snap = Path(run_dir), Path(snapshot)
    needed = ("weights/best.pt", "results.csv", "args.yaml", "bonefrac_train.json")
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise TrainError(f"{run_dir} is not a finished YOLO11 run: no {', '.join(missing)}")
    snap.mkdir(parents=True, exist_ok=True)
    local = {"data": data, "project": "runs/train", "save_dir": f"runs/train/{snap.name}"}
    args = {**yaml.safe_load((run_dir / "args.yaml").read_text()), **local}
    (snap / "args.yaml").write_text(yaml.safe_dump(args, sort_keys=False))
    shutil.copyfile(run_dir / "results.csv", snap / "results.csv")
    record = json.loads((run_dir / "bonefrac_train.json").read_text())
    record["config"].update(data=data, project="runs/train", name=snap.name, snapshot=str(snap))
    if gpu:
        record["machine"].setdefault("gpu", gpu)
    (snap / "bonefrac_train.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.copyfile(run_dir / "weights" / "best.pt", snap / "checkpoint.pt")
    _localise_checkpoint(snap / "checkpoint.pt", local)
    scrub_snapshot(snap)
    return snap


def _localise_checkpoint(path: Path, local: dict[str, Any]) -> None:
    """Replace a checkpoint's arguments with ``local`` (the training machine's paths)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    _set_args(ckpt, local)
    torch.save(ckpt, path)


def _set_args(ckpt: dict[str, Any], local: dict[str, Any]) -> None:
    """Write ``local`` into a loaded checkpoint's training arguments and its models' copies."""
    if isinstance(ckpt.get("train_args"), dict):
        ckpt["train_args"].update(local)
    for key in ("model", "ema"):
        args = getattr(ckpt.get(key), "args", None)
        if isinstance(args, dict):
            args.update({k: v for k, v in local.items() if k in args})


def resume_snapshot(folder: str | Path, **overrides) -> Path:
    """Resume the run whose snapshot (committed record + checkpoint) is in ``folder``, with the
    configuration it was started with (``overrides``: see
    :func:`bonefrac.train.snapshot_config`); returns the best checkpoint."""
    from bonefrac.train import snapshot_config

    return train_yolo11(snapshot_config(Yolo11TrainConfig, folder, **overrides), resume=True)
