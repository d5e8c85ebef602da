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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bonefrac.train import TrainError


@dataclass(frozen=True)
class FrcnnTrainConfig:
    """Everything that defines a Faster R-CNN training run; saved with every checkpoint.

    Attributes:
        data: the dataset's ``data.yaml``.
        protocol: ``7class``, ``6class`` or ``agnostic`` (the classes the model learns).
        arch: ``mobilenet_v3_fpn`` or ``r50_fpn_v2``.
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
        project, name: the run folder ``project/name``.
    """

    data: str
    protocol: str = "7class"
    arch: str = "mobilenet_v3_fpn"
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
    project: str = "runs/train"
    name: str = "frcnn"

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

    def __getitem__(self, i: int):
        import torch

        from bonefrac.processing import preprocess_frcnn

        s = self.samples[i]
        image, transform = preprocess_frcnn(s.image.read_bytes(), max_side=self.max_side)
        boxes = s.boxes.copy()
        boxes[:, [0, 2]] *= transform.gain_x
        boxes[:, [1, 3]] *= transform.gain_y
        if self.train:
            if self.rng.random() < 0.5:
                image = image[:, :, ::-1].copy()
                width = image.shape[2]
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            gain, bias = self.rng.uniform(0.8, 1.2), self.rng.uniform(-0.08, 0.08)
            image = np.clip(image * gain + bias, 0.0, 1.0).astype(np.float32)
        labels = self.class_map[s.class_ids] + 1  # torchvision: 0 is background
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
        }
        return torch.from_numpy(np.ascontiguousarray(image)), target


def _collate(batch):
    return tuple(zip(*batch))


def _prepare(config: FrcnnTrainConfig):
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise TrainError(
            f"training needs the train extras ({exc.name} is missing): "
            "pip install 'bonefrac[train]'"
        ) from None
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


def train_frcnn(config: FrcnnTrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) and return the best checkpoint (``best.pth``).

    Raises:
        TrainError: missing extras, dataset or checkpoint to resume.
    """
    _prepare(config)
    import torch
    from tqdm import tqdm

    from bonefrac.dataset import YoloDataset, make_protocol
    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.spec import FrcnnSpec

    dataset = YoloDataset.from_yaml(config.data)
    protocol = make_protocol(config.protocol, dataset.names)
    class_map = protocol.map_names(dataset.names)
    spec = FrcnnSpec(
        class_names=protocol.names,
        arch=config.arch,
        min_size=config.min_size,
        max_size=config.max_size,
    )
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    last, best_path = run_dir / "last.pth", run_dir / "best.pth"

    model = build_frcnn(spec, seed=config.seed)
    model.transform.min_size = tuple(range(max(32, config.min_size - 64), config.min_size + 1, 32))
    if config.pretrained_backbone and not resume:
        _load_backbone_weights(model, config.arch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=1e-4)

    model.roi_heads.fg_bg_sampler.batch_size_per_image = config.roi_batch
    model.rpn._post_nms_top_n["training"] = config.rpn_proposals
    model.rpn._pre_nms_top_n["training"] = max(config.rpn_proposals, 1000)
    if not 0.0 <= config.negatives <= 1.0:
        raise TrainError(f"--negatives must lie in [0, 1], got {config.negatives}")

    train_samples = list(dataset.samples("train"))[: config.limit]
    valid_samples = list(dataset.samples("valid"))[: config.val_limit]
    train_data = _Samples(
        train_samples, class_map, max_side=spec.max_input_side, train=True, seed=config.seed
    )
    positives = [i for i, s in enumerate(train_samples) if len(s.class_ids)]
    negatives = [i for i, s in enumerate(train_samples) if not len(s.class_ids)]
    n_negatives = round(config.negatives * len(negatives))
    per_epoch = len(positives) + n_negatives

    def epoch_loader(epoch: int):
        """All positives and a fresh draw of negatives, shuffled; the same for a given seed and
        epoch, so a resumed run sees what the uninterrupted one would have seen."""
        rng = random.Random(config.seed * 1_000_003 + epoch)
        order = positives + rng.sample(negatives, n_negatives)
        rng.shuffle(order)
        return torch.utils.data.DataLoader(
            train_data, batch_size=config.batch, sampler=order, collate_fn=_collate, num_workers=0
        )

    steps = max(1, math.ceil(per_epoch / config.batch)) * config.epochs
    warmup = min(200, steps // 5)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (0.1 + 0.9 * step / max(1, warmup))
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    start_epoch, best_ap50, step = 0, -1.0, 0
    if resume:
        if not last.is_file():
            raise TrainError(f"nothing to resume: {last} does not exist")
        state = torch.load(last, map_location="cpu", weights_only=True)
        saved = {**asdict(FrcnnTrainConfig(data=config.data)), **state["config"]}
        differ = [
            f"--{k.replace('_', '-')} {saved[k]} (now {v})"
            for k, v in asdict(config).items()
            if k not in ("data", "project", "name", "val_limit", "epochs") and saved.get(k) != v
        ]
        if differ:
            raise TrainError(
                "resume with the options the run was started with: " + ", ".join(differ)
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_ap50, step = state["epoch"] + 1, state["best_ap50"], state["step"]
        record_path = run_dir / "bonefrac_train.json"
        if record_path.is_file():  # the record says what the run became, and when it changed
            record = json.loads(record_path.read_text())
            record.setdefault("resumes", []).append(
                {
                    "after_epoch": start_epoch,
                    "epochs": config.epochs,
                    "planned_before": record["config"]["epochs"],
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            record["config"]["epochs"] = config.epochs
            record_path.write_text(json.dumps(record, indent=2) + "\n")
    else:
        record = {
            "config": asdict(config),
            "spec": spec.to_dict(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": {"torch": torch.__version__},
        }
        (run_dir / "bonefrac_train.json").write_text(json.dumps(record, indent=2) + "\n")

    log_path = run_dir / "results.csv"
    fields = [
        "epoch",
        "loss",
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
        "lr",
        "val_ap50",
        "val_ap50_95",
        "epoch_s",
    ]
    if not log_path.is_file():
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)

    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        model.train()
        sums: dict[str, float] = {}
        batches = 0
        bar = tqdm(
            epoch_loader(epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress
        )
        for images, targets in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            step += 1
            batches += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            sums["loss"] = sums.get("loss", 0.0) + float(loss)
            bar.set_postfix(loss=f"{sums['loss'] / batches:.3f}")
        ap50, ap = _validate(model, valid_samples, class_map, spec, protocol, dataset.names)
        row = {k: round(sums.get(k, 0.0) / max(1, batches), 5) for k in fields[1:6]}
        row.update(
            epoch=epoch + 1,
            lr=round(lr_at(step), 6),
            val_ap50=round(ap50, 5),
            val_ap50_95=round(ap, 5),
            epoch_s=round(time.time() - started, 1),
        )
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in fields])
        improved = ap50 > best_ap50
        best_ap50 = max(best_ap50, ap50)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "best_ap50": best_ap50,
            "config": asdict(config),
        }
        torch.save(state, last)
        if improved:
            torch.save(
                {
                    "model": model.state_dict(),
                    "epoch": epoch,
                    "val_ap50": ap50,
                    "config": asdict(config),
                },
                best_path,
            )
        print(
            f"epoch {epoch + 1}: loss {row['loss']:.4f}, valid AP50 {ap50:.4f}, "
            f"AP50-95 {ap:.4f} ({row['epoch_s']} s)",
            flush=True,
        )
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
    with torch.no_grad():
        for i, s in enumerate(samples):
            x, _ = data[i]
            out = model([x])[0]
            gain = np.array([x.shape[2] / s.width, x.shape[1] / s.height] * 2, dtype=np.float32)
            det = Detections(
                xyxy=out["boxes"].numpy() / gain,
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
