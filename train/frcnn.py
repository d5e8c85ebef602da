"""Train a torchvision Faster R-CNN on a YOLO-format dataset (polygon or box labels), offline.

Checkpoints every epoch (``last.pth``, and ``best.pth`` by valid AP50), a CSV log of losses and
metrics, and ``--resume``. Images go through bonefrac's own decoding (the one the server uses),
so training and serving see the same pixels.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bonefrac.export._common import require_extras
from bonefrac.processing import InputTransform, letterbox_boxes, preprocess_frcnn, unletterbox_boxes
from bonefrac.train import TrainError


@dataclass(frozen=True)
class FrcnnTrainConfig:
    """Everything that defines a Faster R-CNN training run; saved with every checkpoint.

    Attributes:
        data: the dataset's ``data.yaml``.
        protocol: ``7class``, ``6class`` or ``agnostic`` (the classes the model learns).
        arch: ``mobilenet_v3_fpn`` or ``r50_fpn_v2``.
        norm: ``batch`` (torchvision's BatchNorm) or ``group`` (GroupNorm in the backbone, FPN
            and box head: for training from scratch at small batches); saved with the weights,
            so the exporter rebuilds the same model.
        min_size, max_size: the model's resize (training samples ``min_size`` from
            ``min_size - 64 .. min_size`` for scale jitter).
        epochs, batch, lr: schedule (SGD with momentum, linear warm-up, cosine decay).
        seed: seed of initialisation, augmentation and data order.
        threads: torch CPU threads.
        limit: use only the first N training images (smoke runs).
        val_limit: score only the first N valid images each epoch (None: all).
        negatives: fraction of the images without any fracture drawn afresh each epoch (all
            images with a label are always used); half of this dataset's train images are
            negatives, so 0.2 cuts an epoch by 40 % and keeps hard negatives in view.
        roi_batch: region proposals sampled per image for the box head's loss (torchvision's
            default 512; 64 halves a CPU step and suits the one or two fractures an image has).
        rpn_proposals: proposals kept per image after the RPN's NMS while training (default
            2000 in torchvision; inference keeps torchvision's 1000).
        pretrained_backbone: start from torchvision's ImageNet backbone weights (needs them in
            the torch cache; nothing is downloaded offline).
        device: ``cpu`` or a CUDA device (``cuda``, ``cuda:0``) on a GPU node.
        workers: data-loader worker processes (0: decode in the training process).
        precision: ``float32``, or ``bfloat16``: autocast of the forward pass and losses on the
            device (weights, gradients and optimizer stay float32).
        time_budget_s: fit the schedule to this much training time (as Ultralytics' ``time``):
            after each epoch the epoch count becomes what the mean epoch time allows, and the
            cosine decay follows it, so a run on any machine ends its schedule in about this
            time. None: ``epochs`` as given.
        project, name: the run folder ``project/name``.
        snapshot: a folder (committed with the repository) that receives the run's record, its
            ``results.csv`` and ``checkpoint.pth`` after every epoch, so that the run resumes
            on another machine (:func:`resume_snapshot`).
    """

    data: str
    protocol: str = "7class"
    arch: str = "mobilenet_v3_fpn"
    norm: str = "batch"
    min_size: int = 512
    max_size: int = 640
    epochs: int = 12
    batch: int = 4
    lr: float = 0.02
    seed: int = 0
    threads: int = 2
    limit: int | None = None
    val_limit: int | None = None
    negatives: float = 1.0
    roi_batch: int = 512
    rpn_proposals: int = 2000
    pretrained_backbone: bool = False
    device: str = "cpu"
    workers: int = 0
    precision: str = "float32"
    time_budget_s: float | None = None
    project: str = "runs/train"
    name: str = "frcnn"
    snapshot: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.project).resolve() / self.name


class _Samples:
    """Torch dataset over bonefrac samples: (image ``[3, H, W]``, target) with X-ray-safe
    augmentation (horizontal flip, mild brightness/contrast) when training."""

    def __init__(self, samples, class_map: np.ndarray, *, max_side: int, train: bool, seed: int):
        self.samples = samples
        self.class_map = class_map
        self.max_side = max_side
        self.train = train
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, InputTransform]:
        """Sample ``i`` as the served pipeline sees it: the ``(3, H, W)`` input, its boxes in
        input pixels and the transform back to original pixels."""
        s = self.samples[i]
        image, transform = preprocess_frcnn(s.image.read_bytes(), max_side=self.max_side)
        return image, letterbox_boxes(s.boxes, transform), transform

    def __getitem__(self, i: int):
        import torch

        image, boxes, _ = self.load(i)
        if self.train:
            if self.rng.random() < 0.5:
                image = image[:, :, ::-1].copy()
                width = image.shape[2]
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            gain, bias = self.rng.uniform(0.8, 1.2), self.rng.uniform(-0.08, 0.08)
            image = np.clip(image * gain + bias, 0.0, 1.0).astype(np.float32)
        labels = self.class_map[self.samples[i].class_ids] + 1  # torchvision: 0 is background
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
        }
        return torch.from_numpy(np.ascontiguousarray(image)), target


def _collate(batch):
    return tuple(zip(*batch))


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (a forked worker would otherwise
    repeat its siblings' flips and gains), the same for a given seed and epoch."""
    import torch

    info = torch.utils.data.get_worker_info()
    info.dataset.rng = random.Random(info.seed)


def _prepare(config: FrcnnTrainConfig):
    require_extras(("torch", "torchvision"), extra="train", purpose="training", error=TrainError)
    import torch

    from bonefrac.export.frcnn import FRCNN_NORMS

    if not 0.0 <= config.negatives <= 1.0:
        raise TrainError(f"--negatives must lie in [0, 1], got {config.negatives}")
    if config.norm not in FRCNN_NORMS:
        raise TrainError(f"--norm must be one of {', '.join(FRCNN_NORMS)}, got {config.norm!r}")
    if config.precision not in ("float32", "bfloat16"):
        raise TrainError(f"--precision must be float32 or bfloat16, got {config.precision!r}")
    from bonefrac.train.speed import slow_bfloat16

    if warning := slow_bfloat16(config.precision, config.device):
        print(warning, flush=True)
    if config.device != "cpu" and not torch.cuda.is_available():
        raise TrainError(f"--device {config.device}: this machine has no CUDA device; use cpu")
    if config.norm == "group" and config.pretrained_backbone:
        raise TrainError(
            "--pretrained-backbone holds BatchNorm weights; --norm group trains from scratch: "
            "drop one of the two"
        )
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _load_backbone_weights(model, arch: str) -> None:
    """ImageNet backbone weights from torchvision (its cache only: offline, nothing downloads).

    Raises:
        TrainError: when the weights are not in the local torch cache.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    weights = (
        MobileNet_V3_Large_Weights.IMAGENET1K_V1
        if arch == "mobilenet_v3_fpn"
        else ResNet50_Weights.IMAGENET1K_V1
    )
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, OSError ... when offline
        raise TrainError(
            f"cannot load the pretrained {arch} backbone ({type(exc).__name__}: {exc}); this "
            "machine is offline: put the file in the torch hub cache, or train without "
            "--pretrained-backbone"
        ) from None
    body = model.backbone.body
    missing, unexpected = body.load_state_dict(
        {k.replace("features.", ""): v for k, v in state.items()}, strict=False
    )
    if len(missing) == len(body.state_dict()):
        raise TrainError(f"the pretrained {arch} weights do not fit the backbone")


def _build_model(config: FrcnnTrainConfig, spec, *, resume: bool):
    """The model with the run's training settings, its trainable parameters and optimizer."""
    import torch

    from bonefrac.export.frcnn import build_frcnn

    model = build_frcnn(spec, seed=config.seed, norm=config.norm)
    model.transform.min_size = tuple(range(max(32, config.min_size - 64), config.min_size + 1, 32))
    if config.pretrained_backbone and not resume:
        _load_backbone_weights(model, config.arch)
    model.to(config.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=1e-4)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = config.roi_batch
    model.rpn._post_nms_top_n["training"] = config.rpn_proposals
    model.rpn._pre_nms_top_n["training"] = max(config.rpn_proposals, 1000)
    return model, params, optimizer


class _EpochDraw:
    """Which training images an epoch uses: all positives and a fresh draw of negatives,
    shuffled; the same for a given seed and epoch, so a resumed run sees what the uninterrupted
    one would have seen."""

    def __init__(self, data: _Samples, config: FrcnnTrainConfig) -> None:
        self.data = data
        self.config = config
        self.positives = [i for i, s in enumerate(data.samples) if len(s.class_ids)]
        self.negatives = [i for i, s in enumerate(data.samples) if not len(s.class_ids)]
        self.n_negatives = round(config.negatives * len(self.negatives))

    @property
    def per_epoch(self) -> int:
        return len(self.positives) + self.n_negatives

    def loader(self, epoch: int):
        import torch

        rng = random.Random(self.config.seed * 1_000_003 + epoch)
        order = self.positives + rng.sample(self.negatives, self.n_negatives)
        rng.shuffle(order)
        return torch.utils.data.DataLoader(
            self.data,
            batch_size=self.config.batch,
            sampler=order,
            collate_fn=_collate,
            num_workers=self.config.workers,
            worker_init_fn=_seed_worker if self.config.workers else None,
            generator=torch.Generator().manual_seed(rng.getrandbits(32)),
            pin_memory=self.config.device != "cpu",
        )


def _schedule(config: FrcnnTrainConfig, per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each step: linear warm-up (at most 200 steps, a fifth of the run),
    then cosine decay to zero at the last step."""
    steps = max(1, math.ceil(per_epoch / config.batch)) * config.epochs
    warmup = min(200, steps // 5)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (0.1 + 0.9 * step / max(1, warmup))
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return lr_at


@dataclass
class _Progress:
    """Where a run stands: the next epoch, the best valid AP50 so far and the optimizer step."""

    epoch: int = 0
    best_ap50: float = -1.0
    step: int = 0


def _start_record(config: FrcnnTrainConfig, spec) -> None:
    """Write the run's record (``bonefrac_train.json``): config, spec, machine, versions."""
    import torch

    record = {
        "config": asdict(config),
        "spec": spec.to_dict(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": _device_name(config.device),
        },
        "versions": {"torch": torch.__version__},
    }
    (config.run_dir / "bonefrac_train.json").write_text(json.dumps(record, indent=2) + "\n")


def _device_name(device: str) -> str:
    """``cpu``, or ``cuda: <the GPU's name>``: what the record says a run or resume ran on."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return device
    return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"


#: Options a resumed run may change: where it runs and how long, not what it learns.
_MAY_CHANGE_ON_RESUME = (
    "data",
    "project",
    "name",
    "val_limit",
    "epochs",
    "device",
    "workers",
    "precision",
    "time_budget_s",
    "threads",
    "snapshot",
)


def _resume(config: FrcnnTrainConfig, model, optimizer) -> _Progress:
    """Load ``last.pth`` into the model and optimizer, and note the resume in the run's record
    (what the run became, and when it changed).

    Raises:
        TrainError: no checkpoint, or options other than the run was started with.
    """
    import torch

    last = config.run_dir / "last.pth"
    if not last.is_file() and config.snapshot:
        restore_snapshot(config)
    if not last.is_file():
        raise TrainError(f"nothing to resume: {last} does not exist")
    state = torch.load(last, map_location=config.device, weights_only=True)
    saved = {**asdict(FrcnnTrainConfig(data=config.data)), **state["config"]}
    differ = [
        f"--{k.replace('_', '-')} {saved[k]} (now {v})"
        for k, v in asdict(config).items()
        if k not in _MAY_CHANGE_ON_RESUME and saved.get(k) != v
    ]
    if differ:
        raise TrainError("resume with the options the run was started with: " + ", ".join(differ))
    model.load_state_dict(state["model"])  # FP16 weights of a snapshot become float32 here
    if "optimizer" in state:  # a snapshot has none: the momentum restarts from zero
        optimizer.load_state_dict(state["optimizer"])
    # Without best.pth (a new machine: the snapshot keeps the last epoch only) the best is the
    # best since this resume.
    best_ap50 = state["best_ap50"] if (config.run_dir / "best.pth").is_file() else -1.0
    progress = _Progress(state["epoch"] + 1, best_ap50, state["step"])
    record_path = config.run_dir / "bonefrac_train.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        record.setdefault("resumes", []).append(
            {
                "after_epoch": progress.epoch,
                "epochs": config.epochs,
                "planned_before": record["config"]["epochs"],
                "momentum_restarted": "optimizer" not in state,
                "device": _device_name(config.device),
                "cpus": os.cpu_count(),
                "precision": config.precision,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        record["config"]["epochs"] = config.epochs
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    return progress


_LOSSES = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
#: The columns of ``results.csv``.
_LOG_FIELDS = ("epoch", *_LOSSES, "lr", "val_ap50", "val_ap50_95", "epoch_s")


def _autocast(config: FrcnnTrainConfig):
    """bfloat16 autocast on the run's device, or nothing."""
    import contextlib

    import torch

    if config.precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(config.device).type, dtype=torch.bfloat16)


def train_step(model, optimizer, params, images, targets, *, config: FrcnnTrainConfig):
    """One optimizer step on a batch (forward under the run's autocast, losses, backward,
    gradient clipping, SGD); returns each loss and their sum (``loss``). A step whose loss is
    not finite changes nothing."""
    import torch

    with _autocast(config):
        losses = model(images, targets)
    losses = {k: v.float() for k, v in losses.items()}
    loss = sum(losses.values())
    if torch.isfinite(loss):
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
    return {k: float(v.detach()) for k, v in {**losses, "loss": loss}.items()}


def _train_epoch(
    model, optimizer, params, batches, *, lr_at, run: _Progress, config: FrcnnTrainConfig, show
) -> dict[str, float]:
    """One pass over the epoch's batches on ``config.device``, with a progress bar when
    ``show`` (its ``data`` is the share of the time spent waiting for the loader: high means
    add ``--workers``); returns the mean of each loss and advances ``run.step``.

    Raises:
        TrainError: when the loss stops being finite.
    """
    import torch
    from tqdm import tqdm

    model.train()
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(batches, desc=f"epoch {run.epoch + 1}/{config.epochs}", disable=not show)
    device = torch.device(config.device)
    started = mark = time.perf_counter()
    waited = 0.0
    for images, targets in bar:
        waited += time.perf_counter() - mark
        for group in optimizer.param_groups:
            group["lr"] = lr_at(run.step)
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = train_step(model, optimizer, params, images, targets, config=config)
        if not math.isfinite(losses["loss"]):
            raise TrainError(f"loss became {losses['loss']} at epoch {run.epoch + 1}; lower --lr")
        run.step += 1
        count += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        mark = time.perf_counter()
        data = waited / max(mark - started, 1e-9)
        bar.set_postfix(loss=f"{sums['loss'] / count:.3f}", data=f"{data:.0%}")
    return {k: round(sums.get(k, 0.0) / max(1, count), 5) for k in _LOSSES}


class _EpochLog:
    """``results.csv``: a header, then one row per epoch (appended to when resuming)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(_LOG_FIELDS)

    def write(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in _LOG_FIELDS])

    def epoch_seconds(self) -> list[float]:
        """The time of every epoch logged so far (a resumed run's earlier ones too)."""
        with open(self.path, newline="") as f:
            return [float(row["epoch_s"]) for row in csv.DictReader(f)]


def _save_checkpoints(config: FrcnnTrainConfig, model, optimizer, progress: _Progress, ap50: float):
    """``last.pth`` (model, optimizer, progress: for ``--resume``) after every epoch, and
    ``best.pth`` (model only) when valid AP50 improved. Advances ``progress`` past the epoch."""
    import torch

    improved = ap50 > progress.best_ap50
    progress.best_ap50 = max(progress.best_ap50, ap50)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "best_ap50": progress.best_ap50,
        "config": asdict(config),
    }
    torch.save(state, config.run_dir / "last.pth")
    if improved:
        best = {"model": state["model"], "epoch": progress.epoch, "val_ap50": ap50}
        torch.save({**best, "config": asdict(config)}, config.run_dir / "best.pth")
    progress.epoch += 1


def _epoch_loop(
    config: FrcnnTrainConfig,
    model,
    optimizer,
    params,
    *,
    draw: _EpochDraw,
    lr_at: Callable[[int], float],
    run: _Progress,
    validate: Callable[[], tuple[float, float]],
    show: bool,
) -> None:
    """The epochs from ``run.epoch`` to ``config.epochs``: train, validate, log a row of
    ``results.csv``, checkpoint, and print a line each. With a time budget the epoch count (and
    the learning-rate schedule with it) is fitted to the budget after every epoch."""
    log = _EpochLog(config.run_dir / "results.csv")
    while run.epoch < config.epochs:
        started = time.time()
        losses = _train_epoch(
            model,
            optimizer,
            params,
            draw.loader(run.epoch),
            lr_at=lr_at,
            run=run,
            config=config,
            show=show,
        )
        ap50, ap = validate()
        row = {
            **losses,
            "epoch": run.epoch + 1,
            "lr": round(lr_at(run.step), 6),
            "val_ap50": round(ap50, 5),
            "val_ap50_95": round(ap, 5),
            "epoch_s": round(time.time() - started, 1),
        }
        log.write(row)
        if config.time_budget_s:
            epochs = fit_epochs(config.time_budget_s, log.epoch_seconds())
            if epochs != config.epochs:
                config = replace(config, epochs=epochs)
                lr_at = _schedule(config, draw.per_epoch)
                _record_epochs(config)
        _save_checkpoints(config, model, optimizer, run, ap50)
        if config.snapshot:
            save_snapshot(config)
        print(
            f"epoch {row['epoch']}/{config.epochs}: loss {row['loss']:.4f}, valid AP50 "
            f"{ap50:.4f}, AP50-95 {ap:.4f} ({row['epoch_s']} s)",
            flush=True,
        )


SNAPSHOT_CHECKPOINT = "checkpoint.pth"
SNAPSHOT_FILES = ("results.csv", "bonefrac_train.json")


def save_snapshot(config: FrcnnTrainConfig) -> Path:
    """Mirror the run into ``config.snapshot``: ``checkpoint.pth`` is ``last.pth`` with FP16
    weights and without the optimizer (the SGD momentum would double it: MobileNetV3-FPN is 38 MB
    this way, 150 MB in full), beside the record and ``results.csv``. Each file is replaced
    atomically, so a run stopped while saving leaves the previous epoch's snapshot.

    Raises:
        TrainError: the run has no ``last.pth`` yet.
    """
    import shutil

    import torch

    last = config.run_dir / "last.pth"
    if not last.is_file():
        raise TrainError(f"no {last} to snapshot yet: it is written after the first epoch")
    snap = Path(config.snapshot or config.run_dir / "snapshot")
    snap.mkdir(parents=True, exist_ok=True)
    state = torch.load(last, map_location="cpu", weights_only=True)
    state.pop("optimizer", None)
    state["model"] = half_weights(state["model"])
    tmp = snap / f".{SNAPSHOT_CHECKPOINT}.tmp"
    torch.save(state, tmp)
    tmp.replace(snap / SNAPSHOT_CHECKPOINT)
    for name in SNAPSHOT_FILES:
        if (config.run_dir / name).is_file():
            shutil.copyfile(config.run_dir / name, snap / f".{name}.tmp")
            (snap / f".{name}.tmp").replace(snap / name)
    return snap


def half_weights(state_dict: dict) -> dict:
    """A ``state_dict`` with its floating-point tensors stored as FP16 (half the file; loading
    into the model converts them back to float32)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def restore_snapshot(config: FrcnnTrainConfig) -> None:
    """Seed the run folder from ``config.snapshot`` (a new machine): its record and log, and
    its checkpoint as ``last.pth``."""
    import shutil

    snap = Path(config.snapshot or "")
    if not (snap / SNAPSHOT_CHECKPOINT).is_file():
        raise TrainError(f"nothing to resume: {snap / SNAPSHOT_CHECKPOINT} does not exist")
    config.run_dir.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT_FILES:
        if (snap / name).is_file():
            shutil.copyfile(snap / name, config.run_dir / name)
    shutil.copyfile(snap / SNAPSHOT_CHECKPOINT, config.run_dir / "last.pth")


def resume_snapshot(folder: str | Path, **overrides) -> Path:
    """Resume the run whose snapshot is in ``folder`` with the configuration it was started
    with (``overrides``: see :func:`bonefrac.train.snapshot_config`); returns ``best.pth``."""
    from bonefrac.train import snapshot_config

    return train_frcnn(snapshot_config(FrcnnTrainConfig, folder, **overrides), resume=True)


def fit_epochs(budget_s: float, epoch_seconds: list[float]) -> int:
    """How many epochs fit in ``budget_s`` at the mean of the epochs so far (never fewer than
    those already done, at least one)."""
    done = len(epoch_seconds)
    if not done:
        raise ValueError("fit_epochs needs the time of at least one epoch")
    mean_s = sum(epoch_seconds) / done
    return max(1, done, math.floor(budget_s / mean_s))


def _record_epochs(config: FrcnnTrainConfig) -> None:
    """Keep the run's record on the epoch count a time budget fitted."""
    path = config.run_dir / "bonefrac_train.json"
    if path.is_file():
        record = json.loads(path.read_text())
        record["config"]["epochs"] = config.epochs
        path.write_text(json.dumps(record, indent=2) + "\n")


def run_data(config: FrcnnTrainConfig):
    """The run's dataset, label protocol and model spec (classes, architecture, input size)."""
    from bonefrac.dataset import YoloDataset, make_protocol
    from bonefrac.spec import FrcnnSpec

    dataset = YoloDataset.from_yaml(config.data)
    protocol = make_protocol(config.protocol, dataset.names)
    spec = FrcnnSpec(
        class_names=protocol.names,
        arch=config.arch,
        min_size=config.min_size,
        max_size=config.max_size,
    )
    return dataset, protocol, spec


def train_frcnn(config: FrcnnTrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) and return the best checkpoint (``best.pth``).

    Raises:
        TrainError: missing extras, dataset or checkpoint to resume.
    """
    _prepare(config)
    dataset, protocol, spec = run_data(config)
    class_map = protocol.map_names(dataset.names)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    model, params, optimizer = _build_model(config, spec, resume=resume)
    train_data = _Samples(
        list(dataset.samples("train"))[: config.limit],
        class_map,
        max_side=spec.max_input_side,
        train=True,
        seed=config.seed,
    )
    valid_samples = list(dataset.samples("valid"))[: config.val_limit]
    draw = _EpochDraw(train_data, config)
    lr_at = _schedule(config, draw.per_epoch)
    if resume:
        run = _resume(config, model, optimizer)
    else:
        run = _Progress()
        _start_record(config, spec)
    _epoch_loop(
        config,
        model,
        optimizer,
        params,
        draw=draw,
        lr_at=lr_at,
        run=run,
        validate=lambda: _validate(model, valid_samples, class_map, spec, protocol, dataset.names),
        show=progress,
    )
    best_path = config.run_dir / "best.pth"
    if not best_path.is_file():
        raise TrainError(f"training ended without {best_path}")
    return best_path


def _validate(model, samples, class_map, spec, protocol, dataset_names) -> tuple[float, float]:
    """Valid AP50 and AP50-95 with PyTorch (the exported model is scored by ``bonefrac eval``)."""
    import torch

    from bonefrac.dataset import to_coco
    from bonefrac.detections import Detections
    from bonefrac.metrics import ImageEval, coco_ap

    if not samples:
        return 0.0, 0.0
    data = _Samples(samples, class_map, max_side=spec.max_input_side, train=False, seed=0)
    model.eval()
    images = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, s in enumerate(samples):
            x, _, transform = data.load(i)
            out = {
                k: v.float().cpu() for k, v in model([torch.from_numpy(x).to(device)])[0].items()
            }
            det = Detections(
                xyxy=unletterbox_boxes(out["boxes"].numpy(), transform),
                scores=out["scores"].numpy(),
                class_ids=out["labels"].numpy() - 1,
            )
            images.append(
                ImageEval(
                    gt_boxes=s.boxes.astype(np.float64),
                    gt_classes=class_map[s.class_ids],
                    det_boxes=det.xyxy.astype(np.float64),
                    det_scores=det.scores.astype(np.float64),
                    det_classes=det.class_ids.astype(np.int64),
                )
            )
    result = coco_ap(to_coco(samples, protocol, dataset_names), images, protocol.names)
    return result.ap50, result.ap50_95
