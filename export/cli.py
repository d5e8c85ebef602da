"""``bonefrac export``: checkpoints -> ONNX -> Triton model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bonefrac.client.cli import collect_images


def _classes_from_data(path: str) -> list[str]:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path} has no 'names' list of classes")
    return [str(n) for n in names]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a detector to ONNX and a Triton model repository",
        description="Export a trained detector to ONNX, check ONNX Runtime against PyTorch, and "
        "write the model and its config.pbtxt files into a Triton model repository. "
        "Needs the export extras: pip install 'bonefrac[export]'.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="MODEL", required=True)
    y = kinds.add_parser(
        "yolo11",
        help="an Ultralytics YOLO11 checkpoint or config",
        description="Export Ultralytics YOLO11 (opset 17, dynamic batch and size) as the ensemble "
        "NAME = NAME_preprocess -> NAME_detector -> NAME_postprocess.",
    )
    src = y.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="PATH.pt", help="a trained Ultralytics checkpoint")
    src.add_argument(
        "--config",
        metavar="YAML",
        help="a model config such as yolo11n.yaml (random weights, seeded)",
    )
    names = y.add_mutually_exclusive_group()
    names.add_argument("--classes", nargs="+", metavar="NAME", help="class names in id order")
    names.add_argument("--data", metavar="DATA.yaml", help="take class names from a dataset yaml")
    y.add_argument(
        "--out",
        default="model_repository",
        metavar="DIR",
        help="model repository to write (default: %(default)s)",
    )
    y.add_argument("--name", default="yolo11", help="ensemble name (default: %(default)s)")
    y.add_argument("--imgsz", type=int, default=640, help="letterbox side (default: %(default)s)")
    y.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    y.add_argument(
        "--seed", type=int, default=0, help="seed for random init (default: %(default)s)"
    )
    y.add_argument(
        "--parity-images",
        metavar="PATH",
        nargs="*",
        default=[],
        help="images or folders for the parity check (first 4; random inputs if none)",
    )
    y.set_defaults(func=run_yolo11)


def run_yolo11(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.export.yolo11 import export_yolo11

    try:
        classes = _classes_from_data(args.data) if args.data else args.classes
        images = collect_images(args.parity_images)[:4] if args.parity_images else []
        result = export_yolo11(
            out=args.out,
            weights=args.weights,
            config=args.config,
            class_names=classes,
            imgsz=args.imgsz,
            name=args.name,
            opset=args.opset,
            seed=args.seed,
            parity_images=images,
        )
    except (BonefracError, ValueError, FileNotFoundError) as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    print(result.parity)
    print(
        f"wrote {len(result.files)} files for ensemble '{result.spec.name}' "
        f"({len(result.spec.class_names)} classes) into {args.out}"
    )
    return 0
