"""What one YOLO11 training step costs on this CPU, per image, for the choices that matter.

Each variant (model size, image size, float32 or bfloat16 autocast) runs a forward pass, the
loss, a backward pass and an optimizer step on a batch of real, letterboxed X-rays. The
variants are interleaved round after round so that a busy machine slows them alike: compare
the ratios in one record, not absolute numbers across records. Data loading is measured apart:
decoding + letterboxing from JPEG (what an uncached epoch pays for every image) against a copy
from memory (Ultralytics' ``cache="ram"``).

Run: ``python -m bonefrac.train.speed --data DATA.yaml --out docs/train/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Variant:
    model: str  # yolo11n.yaml, yolo11s.yaml
    imgsz: int
    dtype: str  # float32, bfloat16

    @property
    def label(self) -> str:
        return f"{self.model.removesuffix('.yaml')} {self.imgsz}px {self.dtype}"


def _batch(images: list[Path], labels_dir: Path, imgsz: int, num_classes: int):
    """A training batch as Ultralytics' loss wants it: letterboxed images and their boxes."""
    import torch

    from bonefrac.dataset import parse_label_file
    from bonefrac.processing import letterbox_boxes, preprocess_yolo

    tensors, idx, cls, boxes = [], [], [], []
    for i, path in enumerate(images):
        tensor, transform = preprocess_yolo(path.read_bytes(), size=imgsz)
        tensors.append(tensor)
        norm, classes = parse_label_file(labels_dir / f"{path.stem}.txt", num_classes=num_classes)
        pixels = norm * [transform.width, transform.height, transform.width, transform.height]
        for class_id, (x1, y1, x2, y2) in zip(classes, letterbox_boxes(pixels, transform)):
            idx.append(i)
            cls.append(int(class_id))
            boxes.append(
                [(x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz]
            )
    return {
        "img": torch.from_numpy(np.stack(tensors)),
        "batch_idx": torch.tensor(idx, dtype=torch.float32),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    }


def _step_seconds(model, optimizer, batch, dtype: str) -> float:
    import torch

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        loss, _ = model.loss(batch)
    loss.sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure_steps(variants, images, labels_dir, *, batch: int, rounds: int, names) -> dict:
    """Median seconds per image of a training step, per variant, interleaved by round."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    prepared = {}
    for v in variants:
        model = DetectionModel(v.model, nc=len(names), verbose=False)
        model.args = _hyp()
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        data = _batch(images[:batch], labels_dir, v.imgsz, len(names))
        _step_seconds(model, optimizer, data, v.dtype)  # warm-up
        prepared[v] = (model, optimizer, data)
    samples: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            model, optimizer, data = prepared[v]
            samples[v].append(_step_seconds(model, optimizer, data, v.dtype) / batch)
    return {
        v.label: {**asdict(v), "s_per_image": statistics.median(s), "samples": s}
        for v, s in samples.items()
    }


def _hyp():
    from ultralytics.cfg import get_cfg

    return get_cfg()  # the default loss gains (box, cls, dfl)


def measure_loading(images: list[Path], imgsz: int, *, rounds: int) -> dict:
    """Seconds per image: JPEG decode + letterbox (no cache) vs a copy of the cached array."""
    from bonefrac.processing import preprocess_yolo

    decode, copy = [], []
    cached = [preprocess_yolo(p.read_bytes(), size=imgsz)[0] for p in images]
    for _ in range(rounds):
        start = time.perf_counter()
        for p in images:
            preprocess_yolo(p.read_bytes(), size=imgsz)
        decode.append((time.perf_counter() - start) / len(images))
        start = time.perf_counter()
        for array in cached:
            array.copy()
        copy.append((time.perf_counter() - start) / len(images))
    return {
        "imgsz": imgsz,
        "decode_s_per_image": statistics.median(decode),
        "cached_s_per_image": statistics.median(copy),
    }


def cpu_model() -> str:
    """The CPU's model name and its bfloat16 features (AMX runs bfloat16 far faster)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(bf16) or 'no bfloat16 instructions'})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bonefrac.train.speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset yaml")
    p.add_argument("--out", required=True, help="JSON record to write")
    p.add_argument("--models", default="yolo11n.yaml,yolo11s.yaml", help="model configs")
    p.add_argument("--sizes", default="320,480,640", help="image sizes")
    p.add_argument("--dtypes", default="float32,bfloat16", help="float32 and/or bfloat16")
    p.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = p.parse_args(argv)

    import torch

    from bonefrac.dataset import YoloDataset

    torch.set_num_threads(args.threads)
    dataset = YoloDataset.from_yaml(args.data)
    split = Path(args.data).resolve().parent / "train"
    images = sorted((split / "images").glob("*.jpg"))[::97][: max(args.batch, 16)]
    variants = [
        Variant(m, int(s), d)
        for m in args.models.split(",")
        for s in args.sizes.split(",")
        for d in args.dtypes.split(",")
    ]
    started = time.time()
    record = {
        "what": "seconds per image of one YOLO11 training step (forward, loss, backward, SGD "
        "step), median of interleaved rounds; data loading per image apart",
        "command": "python -m bonefrac.train.speed "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg()[0],
        },
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "steps": measure_steps(
            variants,
            images,
            split / "labels",
            batch=args.batch,
            rounds=args.rounds,
            names=dataset.names,
        ),
        "loading": [
            measure_loading(images, int(s), rounds=args.rounds) for s in args.sizes.split(",")
        ],
    }
    record["machine"]["load_avg_end"] = os.getloadavg()[0]
    record["wall_s"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for label, row in record["steps"].items():
        print(f"{label:28s} {row['s_per_image']:.4f} s/image")
    for row in record["loading"]:
        print(
            f"loading {row['imgsz']}px: decode {row['decode_s_per_image'] * 1000:.1f} ms, "
            f"cached {row['cached_s_per_image'] * 1000:.2f} ms per image"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
