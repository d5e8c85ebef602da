"""What one training step costs on this CPU, per image, for the choices that matter.

Each variant (model size, image size, float32 or bfloat16 autocast) runs a forward pass, the
loss, a backward pass and an optimizer step on a batch of real, letterboxed X-rays. The
variants are interleaved round after round so that a busy machine slows them alike: compare
the ratios in one record, not absolute numbers across records. Data loading is measured apart:
decoding + letterboxing from JPEG (what an uncached epoch pays for every image) against a copy
from memory (Ultralytics' ``cache="ram"``).

With ``--frcnn RUN`` the same is measured for Faster R-CNN: the step of the run whose record
is in the folder RUN (its loader, augmentation, settings and ``train_step``), under each
normalisation, precision and memory layout asked for.

Run: ``python -m bonefrac.train.speed --data DATA.yaml --out docs/train/speed.json``, and
``python -m bonefrac.train.speed --data DATA.yaml --frcnn docs/train/frcnn-mnv3-512-gn
--out docs/train/speed-frcnn.json``.
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
    channels_last: bool = False  # weights in NHWC memory layout

    @property
    def label(self) -> str:
        layout = " channels_last" if self.channels_last else ""
        return f"{self.model.removesuffix('.yaml')} {self.imgsz}px {self.dtype}{layout}"


@dataclass(frozen=True)
class FrcnnVariant:
    norm: str  # batch, group
    dtype: str  # float32, bfloat16
    channels_last: bool = False

    @property
    def label(self) -> str:
        layout = " channels_last" if self.channels_last else ""
        return f"frcnn {self.norm}norm {self.dtype}{layout}"


def measure_frcnn_steps(variants, run: Path, data: str, *, batch: int, rounds: int) -> dict:
    """Median seconds per image of a Faster R-CNN training step, per variant, interleaved by
    round: the run's own step (:func:`bonefrac.train.frcnn.train_step`) on the first ``batch``
    training images with fractures, loaded and augmented as the run loads them."""
    from dataclasses import replace

    import torch

    from bonefrac.train import snapshot_config
    from bonefrac.train.frcnn import FrcnnTrainConfig, _build_model, _Samples, run_data, train_step

    config = snapshot_config(FrcnnTrainConfig, run, data=data, device="cpu")
    dataset, protocol, spec = run_data(config)
    samples = [s for s in dataset.samples("train") if len(s.class_ids)][:batch]
    loaded = _Samples(
        samples, protocol.map_names(dataset.names), max_side=spec.max_input_side, train=True, seed=0
    )
    images, targets = zip(*(loaded[i] for i in range(len(samples))))
    prepared = {}
    for v in variants:
        torch.manual_seed(0)
        variant_config = replace(config, norm=v.norm, precision=v.dtype)
        model, params, optimizer = _build_model(variant_config, spec, resume=False)
        model.train()
        if v.channels_last:
            model.to(memory_format=torch.channels_last)
        step = (model, optimizer, params, list(images), list(targets))
        train_step(*step, config=variant_config)  # warm-up
        prepared[v] = (step, variant_config)
    samples_s: dict[FrcnnVariant, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            step, variant_config = prepared[v]
            start = time.perf_counter()
            train_step(*step, config=variant_config)
            samples_s[v].append((time.perf_counter() - start) / len(samples))
    return {
        v.label: {**asdict(v), "s_per_image": statistics.median(s), "samples": s}
        for v, s in samples_s.items()
    }


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


def _step_seconds(model, optimizer, batch, v: Variant) -> float:
    import torch

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.dtype == "bfloat16"):
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
        if v.channels_last:  # the weights only, as in training: the first convolution
            model.to(memory_format=torch.channels_last)  # converts each NCHW batch
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        data = _batch(images[:batch], labels_dir, v.imgsz, len(names))
        _step_seconds(model, optimizer, data, v)  # warm-up
        prepared[v] = (model, optimizer, data)
    samples: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            model, optimizer, data = prepared[v]
            samples[v].append(_step_seconds(model, optimizer, data, v) / batch)
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


def best_precision(device: str | None) -> str:
    """The precision a run should train in on this machine: ``bfloat16`` on a GPU and on a CPU
    with bfloat16 instructions (a Faster R-CNN step 1.27x faster on an AMD EPYC with AVX-512
    BF16, ``docs/train/speed-frcnn-avx512bf16.json``), ``float32`` on a CPU without them
    (8x slower there, ``docs/train/speed-frcnn.json``)."""
    if device not in (None, "", "cpu"):
        return "bfloat16"
    return "float32" if "no bfloat16" in cpu_model() else "bfloat16"


def slow_bfloat16(precision: str, device: str) -> str | None:
    """A warning when bfloat16 autocast is asked for on a CPU without bfloat16 instructions
    (there PyTorch falls back to slow kernels: a Faster R-CNN step took 8x as long,
    ``docs/train/speed-frcnn.json``); None otherwise."""
    if precision != "bfloat16" or device not in ("cpu", "") or "no bfloat16" not in cpu_model():
        return None
    return (
        f"warning: {cpu_model()}: bfloat16 autocast on this CPU is far slower than float32; "
        "train with --precision float32 (a Faster R-CNN run resumes with it too)"
    )


#: Allocators to preload instead of glibc's malloc: their library and Debian package.
ALLOCATORS = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
}


def allocator_library(name: str) -> str | None:
    """The shared library of allocator ``name`` on this machine (None: not installed)."""
    if name not in ALLOCATORS:
        return None
    lib = ALLOCATORS[name][0]
    found = sorted(Path("/usr/lib").glob(f"*/{lib}")) + sorted(Path("/usr/lib").glob(lib))
    return str(found[0]) if found else None


def current_allocator() -> str:
    """``tcmalloc`` or ``jemalloc`` when preloaded into this process, else ``glibc``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "glibc"
    return next((name for name, (lib, _) in ALLOCATORS.items() if lib in maps), "glibc")


def _main_allocators(args, argv: list[str]) -> int:
    """Each round, each allocator: a fresh process measures one round of every variant
    (``LD_PRELOAD``); the medians over rounds go into one record, labelled by allocator."""
    import subprocess
    import tempfile

    names = args.allocators.split(",")
    unknown = [n for n in names if n != "glibc" and n not in ALLOCATORS]
    if unknown:
        raise SystemExit(f"unknown allocator {', '.join(unknown)}: glibc, {', '.join(ALLOCATORS)}")
    missing = [n for n in names if n != "glibc" and not allocator_library(n)]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not installed: apt-get install "
            + " ".join(ALLOCATORS[n][1] for n in missing)
        )
    child_args, skip = [], False
    for a in argv:  # the same measurement, one round, without --allocators and --out
        if skip:
            skip = False
        elif a in ("--allocators", "--out", "--rounds"):
            skip = True
        elif not a.startswith(("--allocators=", "--out=", "--rounds=")):
            child_args.append(a)
    started = time.time()
    record: dict = {}
    samples: dict[str, list[float]] = {}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in names:
                out = Path(tmp) / f"{name}-{r}.json"
                env = {**os.environ, "LD_PRELOAD": allocator_library(name) or ""}
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bonefrac.train.speed",
                        *child_args,
                        "--rounds",
                        "1",
                        "--out",
                        str(out),
                    ],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                child = json.loads(out.read_text())
                if child["machine"]["allocator"] != name:
                    raise SystemExit(
                        f"{name} was asked for but the step ran with "
                        f"{child['machine']['allocator']}"
                    )
                record = record or child
                for label, row in child["steps"].items():
                    key = f"{label} {name}"
                    rows[key] = {**row, "allocator": name}
                    samples.setdefault(key, []).extend(row["samples"])
    load_start = record["machine"]["load_avg_start"]
    record = {
        **record,
        "what": record["what"] + "; each allocator in fresh processes, alternating by round",
        "command": "python -m bonefrac.train.speed " + " ".join(argv),
        "rounds": args.rounds,
        "steps": {
            k: {**rows[k], "s_per_image": statistics.median(v), "samples": v}
            for k, v in samples.items()
        },
    }
    record["machine"] = {
        **record["machine"],
        "allocator": args.allocators,
        "load_avg_start": load_start,
    }
    _write(record, args.out, started)
    return 0


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
    p.add_argument(
        "--layouts",
        default="nchw",
        help="YOLO11 memory layouts, nchw and/or channels_last (default: %(default)s)",
    )
    p.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument(
        "--allocators",
        help="compare memory allocators, e.g. glibc,tcmalloc: each round runs every allocator "
        "in a fresh process (LD_PRELOAD); the step labels say which (default: this process's)",
    )
    p.add_argument(
        "--frcnn",
        metavar="RUN",
        help="measure Faster R-CNN instead: the step of the run recorded in this folder",
    )
    p.add_argument(
        "--variants",
        default="group:float32,group:bfloat16,group:float32:channels_last,batch:float32",
        help="Faster R-CNN variants, NORM:DTYPE[:channels_last] separated by commas (default: "
        "%(default)s)",
    )
    args = p.parse_args(argv)
    if args.allocators:
        return _main_allocators(args, sys.argv[1:] if argv is None else argv)
    if args.frcnn:
        return _main_frcnn(args, argv)
    return _main_yolo(args, argv)


def _main_yolo(args, argv) -> int:
    """YOLO11's step per model, image size, precision and layout, and the loading costs."""
    import torch

    from bonefrac.dataset import YoloDataset

    torch.set_num_threads(args.threads)
    dataset = YoloDataset.from_yaml(args.data)
    split = Path(args.data).resolve().parent / "train"
    images = sorted((split / "images").glob("*.jpg"))[::97][: max(args.batch, 16)]
    layouts = args.layouts.split(",")
    if unknown := set(layouts) - {"nchw", "channels_last"}:
        raise SystemExit(f"unknown layout {', '.join(sorted(unknown))}: nchw, channels_last")
    variants = [
        Variant(m, int(s), d, channels_last=layout == "channels_last")
        for m in args.models.split(",")
        for s in args.sizes.split(",")
        for d in args.dtypes.split(",")
        for layout in layouts
    ]
    started = time.time()
    record = _head(
        "seconds per image of one YOLO11 training step (forward, loss, backward, SGD step), "
        "median of interleaved rounds; data loading per image apart",
        args,
        argv,
    )
    record["steps"] = measure_steps(
        variants,
        images,
        split / "labels",
        batch=args.batch,
        rounds=args.rounds,
        names=dataset.names,
    )
    record["loading"] = [
        measure_loading(images, int(s), rounds=args.rounds) for s in args.sizes.split(",")
    ]
    _write(record, args.out, started)
    for row in record["loading"]:
        print(
            f"loading {row['imgsz']}px: decode {row['decode_s_per_image'] * 1000:.1f} ms, "
            f"cached {row['cached_s_per_image'] * 1000:.2f} ms per image"
        )
    return 0


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "allocator": current_allocator(),
        "load_avg_start": os.getloadavg()[0],
    }


def _head(what: str, args, argv) -> dict:
    """What every speed record starts with: what it measures, the command, date and machine."""
    import torch

    return {
        "what": what,
        "command": "python -m bonefrac.train.speed "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
    }


def _write(record: dict, out: str, started: float) -> None:
    """Close the record (load at the end, wall time), write it, print each step's cost."""
    record["machine"]["load_avg_end"] = os.getloadavg()[0]
    record["wall_s"] = round(time.time() - started, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")
    for label, row in record["steps"].items():
        print(f"{label:40s} {row['s_per_image']:.4f} s/image")


def _main_frcnn(args, argv) -> int:
    import torch

    torch.set_num_threads(args.threads)
    variants = [
        FrcnnVariant(*v.split(":")[:2], channels_last=v.endswith(":channels_last"))
        for v in args.variants.split(",")
    ]
    started = time.time()
    record = _head(
        "seconds per image of one Faster R-CNN training step (the run's own step: forward, "
        "losses, backward, gradient clipping, SGD) on real training images, median of "
        "interleaved rounds",
        args,
        argv,
    )
    record["run"] = Path(args.frcnn).name
    record["steps"] = measure_frcnn_steps(
        variants, Path(args.frcnn), args.data, batch=args.batch, rounds=args.rounds
    )
    _write(record, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
