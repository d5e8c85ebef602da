"""``bonefrac train``: train a detector, then export it through ``bonefrac export``."""

from __future__ import annotations

import argparse
import sys


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
    y.add_argument(
        "--export-to",
        metavar="DIR",
        help="after training, export best.pt into this model repository",
    )
    y.set_defaults(func=run_yolo11)


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

            result = export_yolo11(out=args.export_to, weights=best, imgsz=args.imgsz)
            print(result.parity)
            print(f"exported to {args.export_to}")
    except BonefracError as exc:
        print(f"bonefrac train: {exc}", file=sys.stderr)
        return 1
    return 0
