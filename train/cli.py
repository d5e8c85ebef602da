"""Train a detector on a YOLO-format dataset (needs the train extras).

Train a detector from its config (no pretrained weights are downloaded), save checkpoints every
epoch, and optionally export the best one into a model repository through bonefrac export.
Needs: pip install 'bonefrac[train]'.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bonefrac import _cli


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "train", doc=__doc__)
    kinds = p.add_subparsers(dest="kind", metavar="MODEL", required=True)
    _add_yolo11(kinds)
    _add_frcnn(kinds)


def _add_schedule(p: argparse.ArgumentParser, *, epochs: int, batch: int) -> None:
    """--epochs, --batch, --seed, --threads."""
    p.add_argument("--epochs", type=int, default=epochs, help="epochs")
    p.add_argument("--batch", type=int, default=batch, help="batch size")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=2, help="torch threads")


def _add_device(p: argparse.ArgumentParser, *, workers: int) -> None:
    """--device and --workers."""
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or a CUDA device on a GPU node (yolo11: 0; frcnn: cuda or cuda:0)",
    )
    p.add_argument("--workers", type=int, default=workers, help="data-loader worker processes")


def _add_run(p: argparse.ArgumentParser, *, name: str, checkpoint: str) -> None:
    """The run's folder (--project/--name), --resume, and the export after training."""
    p.add_argument("--project", default="runs/train", help="runs folder")
    p.add_argument("--name", default=name, help="run name")
    p.add_argument("--resume", action="store_true", help=f"resume PROJECT/NAME from {checkpoint}")
    p.add_argument(
        "--export-to",
        metavar="DIR",
        help="after training, export the best checkpoint into this model repository "
        "(replacing the newest version) and score it on valid with bonefrac eval",
    )
    p.add_argument("--export-name", metavar="NAME", help="ensemble name for --export-to")


def _add_yolo11(kinds: argparse._SubParsersAction) -> None:
    y = _cli.subcommand(kinds, "yolo11", run_yolo11)
    _cli.add_data(y)
    y.add_argument(
        "--model", default="yolo11n.yaml", help="model config, yolo11n.yaml ... yolo11x.yaml"
    )
    y.add_argument("--imgsz", type=int, default=320, help="image size")
    _add_schedule(y, epochs=40, batch=16)
    _add_device(y, workers=2)
    y.add_argument(
        "--time-h",
        type=float,
        metavar="HOURS",
        help="train for this long: Ultralytics fits the epoch count and its schedule to it",
    )
    y.add_argument("--patience", type=int, default=100, help="early-stop patience in epochs")
    y.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="bfloat16: autocast forward and loss (on the CPU faster where it has AVX-512 BF16 "
        "or AMX: measured in docs/train/README.md; on CUDA Ultralytics' bf16 AMP)",
    )
    y.add_argument(
        "--cache",
        default="",
        choices=("", "ram", "disk"),
        help="keep decoded, resized images in RAM (several GB at 640 px) or on disk",
    )
    y.add_argument(
        "--snapshot",
        metavar="DIR",
        help="copy checkpoint.pt, results.csv and the record here after every epoch (commit "
        "it); --resume starts from it when PROJECT/NAME has no last.pt (a new machine)",
    )
    _add_run(y, name="yolo11n", checkpoint="last.pt")


def _add_frcnn(kinds: argparse._SubParsersAction) -> None:
    from bonefrac.export.frcnn import FRCNN_NORMS  # torch-free at import

    f = _cli.subcommand(kinds, "frcnn", run_frcnn)
    _cli.add_data(f)
    _cli.add_protocol(f, "7class", "classes to learn")
    _cli.add_frcnn_geometry(f)
    _add_schedule(f, epochs=12, batch=4)
    f.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate")
    _add_device(f, workers=0)
    f.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="bfloat16: autocast forward and losses on the device (weights stay float32)",
    )
    f.add_argument(
        "--time-budget-s",
        type=float,
        metavar="S",
        help="fit the epoch count (and the cosine schedule) to this much training time",
    )
    f.add_argument(
        "--norm",
        default="batch",
        choices=FRCNN_NORMS,
        help="normalisation: batch (BatchNorm), or group (GroupNorm in backbone, FPN and box "
        "head: for training from scratch at small batches); the export takes the checkpoint's",
    )
    f.add_argument("--limit", type=int, metavar="N", help="train on the first N images only")
    f.add_argument(
        "--negatives",
        type=float,
        default=1.0,
        metavar="F",
        help="fraction of fracture-free images drawn afresh each epoch (default: 1.0 = all)",
    )
    f.add_argument(
        "--roi-batch",
        type=int,
        default=512,
        help="proposals per image in the box head's loss (default: 512; 64 is 2x faster on CPU)",
    )
    f.add_argument(
        "--rpn-proposals",
        type=int,
        default=2000,
        help="proposals per image after the RPN while training",
    )
    f.add_argument("--val-limit", type=int, metavar="N", help="validate on the first N only")
    f.add_argument(
        "--snapshot",
        metavar="DIR",
        help="copy checkpoint.pth (FP16 weights, no optimizer), results.csv and the record here "
        "after every epoch (commit it); resume it anywhere with python -m bonefrac.train.resume",
    )
    f.add_argument(
        "--pretrained-backbone",
        action="store_true",
        help="start from torchvision's ImageNet backbone (local cache only)",
    )
    _add_run(f, name="frcnn", checkpoint="last.pth")


def _export_and_evaluate(
    args: argparse.Namespace, export: Callable, run_dir: Path, name: str
) -> None:
    """Export through bonefrac.export, then score the exported pipeline with the evaluator."""
    import json

    from bonefrac.client.evaluate import evaluate, in_process_model
    from bonefrac.client.evaluate_cli import format_report

    result = export()
    print(result.parity)
    print(f"exported '{name}' version {result.version} into {args.export_to}")
    report = evaluate(
        in_process_model(args.export_to, name),
        data=args.data,
        split="valid",
        protocol="6class",
        cache_dir=None,
    )
    (run_dir / "eval_valid_6class.json").write_text(json.dumps(report, indent=1) + "\n")
    print(format_report(report))


def run_yolo11(args: argparse.Namespace) -> int:
    """Train Ultralytics YOLO11.

    Train Ultralytics YOLO11 offline on CPU or GPU. The run's folder (PROJECT/NAME) holds
    weights/last.pt and best.pt, results.csv with the loss and metric log, and
    bonefrac_train.json with the config, versions and wall time. --resume continues an
    interrupted run from last.pt.
    """
    from bonefrac.train.yolo11 import Yolo11TrainConfig, train_yolo11

    config = _cli.config_from_args(Yolo11TrainConfig, args)
    best = train_yolo11(config, resume=args.resume)
    print(f"best checkpoint: {best}")
    if args.export_to:
        from bonefrac.export.yolo11 import export_yolo11

        name = args.export_name or "yolo11"
        _export_and_evaluate(
            args,
            lambda: export_yolo11(
                out=args.export_to, weights=best, imgsz=args.imgsz, name=name, replace=True
            ),
            config.run_dir,
            name,
        )
    return 0


def run_frcnn(args: argparse.Namespace) -> int:
    """Train torchvision Faster R-CNN.

    Train torchvision Faster R-CNN from random weights (or a local ImageNet backbone with
    --pretrained-backbone) on CPU or a CUDA GPU. Polygon labels become boxes; augmentation:
    horizontal flip, mild brightness/contrast, scale jitter. PROJECT/NAME holds last.pth
    (every epoch; --resume continues from it), best.pth (by valid AP50), results.csv and
    bonefrac_train.json.
    """
    from bonefrac.train.frcnn import FrcnnTrainConfig, train_frcnn

    config = _cli.config_from_args(FrcnnTrainConfig, args)
    best = train_frcnn(config, resume=args.resume)
    print(f"best checkpoint: {best}")
    if args.export_to:
        from bonefrac.dataset import YoloDataset, make_protocol
        from bonefrac.export.frcnn import export_frcnn

        names = make_protocol(args.protocol, YoloDataset.from_yaml(args.data).names).names
        name = args.export_name or "frcnn"
        geometry = {"arch": args.arch, "min_size": args.min_size, "max_size": args.max_size}
        geometry["norm"] = args.norm
        _export_and_evaluate(
            args,
            lambda: export_frcnn(
                out=args.export_to,
                class_names=names,
                weights=best,
                name=name,
                replace=True,
                **geometry,
            ),
            config.run_dir,
            name,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bonefrac.train.cli MODEL ...``: ``bonefrac train`` on its own, for a GPU node
    whose PyTorch image has the training packages but not the serving ones (tritonclient)."""
    import sys

    parser = argparse.ArgumentParser(prog="bonefrac")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return _cli.run(parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
