"""``bonefrac train``: train a detector, then export it through ``bonefrac export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a detector on a YOLO-format dataset (needs the train extras)",
        description="Train a detector from its config (no pretrained weights are downloaded), "
        "save checkpoints every epoch, and optionally export the best one into a "
        "model repository. Needs: pip install 'bonefrac[train]'.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="MODEL", required=True)
    y = kinds.add_parser(
        "yolo11",
        help="Ultralytics YOLO11",
        description="Train Ultralytics YOLO11 offline on CPU or GPU. The run's folder "
        "(PROJECT/NAME) holds weights/last.pt and best.pt, results.csv with the "
        "loss and metric log, and bonefrac_train.json with the config, versions and "
        "wall time. --resume continues an interrupted run from last.pt.",
    )
    y.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset yaml")
    y.add_argument(
        "--model",
        default="yolo11n.yaml",
        help="model config, yolo11n.yaml ... yolo11x.yaml (default: %(default)s)",
    )
    y.add_argument("--imgsz", type=int, default=320, help="image size (default: %(default)s)")
    y.add_argument("--epochs", type=int, default=40, help="epochs (default: %(default)s)")
    y.add_argument("--batch", type=int, default=16, help="batch size (default: %(default)s)")
    y.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    y.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    y.add_argument("--workers", type=int, default=2, help="loader workers (default: %(default)s)")
    y.add_argument(
        "--patience",
        type=int,
        default=100,
        help="early-stop patience in epochs (default: %(default)s)",
    )
    y.add_argument("--project", default="runs/train", help="runs folder (default: %(default)s)")
    y.add_argument("--name", default="yolo11n", help="run name (default: %(default)s)")
    y.add_argument("--resume", action="store_true", help="resume PROJECT/NAME from last.pt")
    _finish_args(y)
    y.set_defaults(func=run_yolo11)

    f = kinds.add_parser(
        "frcnn",
        help="torchvision Faster R-CNN",
        description="Train torchvision Faster R-CNN from random weights (or a local ImageNet "
        "backbone with --pretrained-backbone) on CPU. Polygon labels become boxes; "
        "augmentation: horizontal flip, mild brightness/contrast, scale jitter. "
        "PROJECT/NAME holds last.pth (every epoch; --resume continues from it), "
        "best.pth (by valid AP50), results.csv and bonefrac_train.json.",
    )
    f.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset yaml")
    f.add_argument(
        "--protocol",
        default="7class",
        choices=("7class", "6class", "agnostic"),
        help="classes to learn (default: %(default)s)",
    )
    f.add_argument(
        "--arch",
        default="mobilenet_v3_fpn",
        choices=("mobilenet_v3_fpn", "r50_fpn_v2"),
        help="architecture (default: %(default)s)",
    )
    f.add_argument("--min-size", type=int, default=512, help="shorter side (default: 512)")
    f.add_argument("--max-size", type=int, default=640, help="cap on longer side (default: 640)")
    f.add_argument("--epochs", type=int, default=12, help="epochs (default: %(default)s)")
    f.add_argument("--batch", type=int, default=4, help="batch size (default: %(default)s)")
    f.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate (default: 0.02)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    f.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
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
        help="proposals per image after the RPN while training (default: 2000)",
    )
    f.add_argument("--val-limit", type=int, metavar="N", help="validate on the first N only")
    f.add_argument(
        "--pretrained-backbone",
        action="store_true",
        help="start from torchvision's ImageNet backbone (local cache only)",
    )
    f.add_argument("--project", default="runs/train", help="runs folder (default: %(default)s)")
    f.add_argument("--name", default="frcnn", help="run name (default: %(default)s)")
    f.add_argument("--resume", action="store_true", help="resume PROJECT/NAME from last.pth")
    _finish_args(f)
    f.set_defaults(func=run_frcnn)


def _finish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--export-to",
        metavar="DIR",
        help="after training, export the best checkpoint into this model repository "
        "(replacing the newest version) and score it on valid with bonefrac eval",
    )
    p.add_argument("--export-name", metavar="NAME", help="ensemble name for --export-to")


def _export_and_evaluate(args: argparse.Namespace, export, run_dir: Path, name: str) -> None:
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
    from bonefrac.errors import BonefracError
    from bonefrac.train.yolo11 import Yolo11TrainConfig, train_yolo11

    config = Yolo11TrainConfig(
        data=args.data,
        model=args.model,
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
        patience=args.patience,
        project=args.project,
        name=args.name,
    )
    try:
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
    except BonefracError as exc:
        print(f"bonefrac train: {exc}", file=sys.stderr)
        return 1
    return 0


def run_frcnn(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.train.frcnn import FrcnnTrainConfig, train_frcnn

    config = FrcnnTrainConfig(
        data=args.data,
        protocol=args.protocol,
        arch=args.arch,
        min_size=args.min_size,
        max_size=args.max_size,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        limit=args.limit,
        val_limit=args.val_limit,
        negatives=args.negatives,
        roi_batch=args.roi_batch,
        rpn_proposals=args.rpn_proposals,
        pretrained_backbone=args.pretrained_backbone,
        project=args.project,
        name=args.name,
    )
    try:
        best = train_frcnn(config, resume=args.resume)
        print(f"best checkpoint: {best}")
        if args.export_to:
            from bonefrac.dataset import YoloDataset, make_protocol
            from bonefrac.export.frcnn import export_frcnn

            names = make_protocol(args.protocol, YoloDataset.from_yaml(args.data).names).names
            name = args.export_name or "frcnn"
            _export_and_evaluate(
                args,
                lambda: export_frcnn(
                    out=args.export_to,
                    class_names=names,
                    arch=args.arch,
                    weights=best,
                    min_size=args.min_size,
                    max_size=args.max_size,
                    name=name,
                    replace=True,
                ),
                config.run_dir,
                name,
            )
    except BonefracError as exc:
        print(f"bonefrac train: {exc}", file=sys.stderr)
        return 1
    return 0
