"""``bonefrac export``: checkpoints -> ONNX -> Triton model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bonefrac.client.cli import collect_images
from bonefrac.export.triton_config import PROFILES


def classes_from_data(path: str) -> list[str]:
    """The class names of a dataset yaml."""
    from bonefrac.dataset import YoloDataset

    return list(YoloDataset.from_yaml(path).names)


def _common(p: argparse.ArgumentParser, *, name: str) -> None:
    names = p.add_mutually_exclusive_group()
    names.add_argument("--classes", nargs="+", metavar="NAME", help="class names in id order")
    names.add_argument("--data", metavar="DATA.yaml", help="take class names from a dataset yaml")
    p.add_argument(
        "--out",
        default="model_repository",
        metavar="DIR",
        help="model repository to write (default: %(default)s)",
    )
    p.add_argument("--name", default=name, help="ensemble name (default: %(default)s)")
    p.add_argument(
        "--profile",
        default="cpu",
        choices=PROFILES,
        help="cpu: ONNX Runtime in the Python backend (runs anywhere); gpu-onnx: "
        "Triton's onnxruntime_onnx with TensorRT FP16; gpu-trt: a TensorRT plan "
        "built on the GPU node (default: %(default)s)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the newest detector version instead of adding version N+1",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed for random init (default: %(default)s)"
    )
    p.add_argument(
        "--parity-images",
        metavar="PATH",
        nargs="*",
        default=[],
        help="images or folders for the parity check (first 4; random inputs if none)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a detector to ONNX and a Triton model repository",
        description="Export a trained detector to ONNX, check ONNX Runtime against PyTorch, and "
        "write the model and its config.pbtxt files into a Triton model repository "
        "(a new detector version when one exists). Needs the export extras: "
        "pip install 'bonefrac[export]' (not 'retarget').",
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
    y.add_argument("--imgsz", type=int, default=640, help="letterbox side (default: %(default)s)")
    _common(y, name="yolo11")
    y.set_defaults(func=run_yolo11)

    f = kinds.add_parser(
        "frcnn",
        help="a torchvision Faster R-CNN checkpoint (or random weights)",
        description="Export torchvision Faster R-CNN with the legacy exporter (opset 17, dynamic "
        "height, width and detection count; one image per call). Resize and "
        "normalisation are inside the graph. Large weights are stored as FP16 "
        "(--fp32 keeps them FP32).",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="PATH.pth", help="a trained checkpoint (state_dict)")
    src.add_argument("--random", action="store_true", help="seeded random weights")
    f.add_argument(
        "--arch",
        default="mobilenet_v3_fpn",
        choices=("mobilenet_v3_fpn", "r50_fpn_v2"),
        help="mobilenet_v3_fpn for CPU speed, r50_fpn_v2 for accuracy (default: %(default)s)",
    )
    f.add_argument(
        "--min-size",
        type=int,
        default=512,
        help="graph resize: shorter side (default: %(default)s)",
    )
    f.add_argument(
        "--max-size",
        type=int,
        default=640,
        help="graph resize: cap on the longer side (default: %(default)s)",
    )
    f.add_argument("--fp32", action="store_true", help="store weights in FP32 (twice the size)")
    _common(f, name="frcnn")
    f.set_defaults(func=run_frcnn)

    q = kinds.add_parser(
        "int8",
        help="INT8 YOLO11 for the CPU profile (ONNX Runtime static quantization)",
        description="Quantize an exported YOLO11 detector to INT8 (QDQ, per-channel weights), "
        "calibrated on training images through bonefrac's pre-processing, and write "
        "it as the ensemble NAME_int8 next to the FP32 one.",
    )
    q.add_argument("--repository", default="model_repository", metavar="DIR")
    q.add_argument("--model", default="yolo11", help="the FP32 ensemble (default: %(default)s)")
    q.add_argument(
        "--calibration-images",
        required=True,
        metavar="DIR",
        help="training images (never the split you evaluate on)",
    )
    q.add_argument("--count", type=int, default=64, help="calibration images used (default: 64)")
    q.set_defaults(func=run_int8)

    r = kinds.add_parser(
        "retarget",
        help="rewrite an exported model for another profile (no torch needed)",
        description="Copy an exported model from one repository to another with the configs of "
        "another profile, e.g. the CPU repository to a gpu-trt repository for a GPU "
        "node (which then builds its engine with NAME_detector/build_engine.sh).",
    )
    r.add_argument(
        "--repository",
        default="model_repository",
        metavar="DIR",
        help="source repository (default: %(default)s)",
    )
    r.add_argument(
        "--models",
        default="yolo11,frcnn",
        metavar="NAME[,NAME]",
        help="ensembles to copy (default: %(default)s)",
    )
    r.add_argument("--profile", required=True, choices=PROFILES)
    r.add_argument("--out", required=True, metavar="DIR", help="target repository")
    r.set_defaults(func=run_retarget)

    t = kinds.add_parser(
        "threshold",
        help="set an ensemble's default score threshold (e.g. its operating point on valid)",
        description="Set the default score threshold of an ensemble (what requests without "
        "conf_threshold get; the UI starts there): a number, or the operating point a "
        "'bonefrac eval --json' report measured (the lowest threshold that stays within "
        "--fp-rate false positives per image on that split). Rewrites the configs in place.",
    )
    t.add_argument("--repository", default="model_repository", metavar="DIR")
    t.add_argument("--model", required=True, help="ensemble")
    how = t.add_mutually_exclusive_group(required=True)
    how.add_argument("--conf", type=float, help="the threshold")
    how.add_argument("--from-eval", metavar="REPORT.json", help="bonefrac eval --json output")
    t.add_argument(
        "--fp-rate", default="1", help="false positives per image for --from-eval (default: 1)"
    )
    t.set_defaults(func=run_threshold)


def _classes(args: argparse.Namespace) -> list[str] | None:
    return classes_from_data(args.data) if args.data else args.classes


def _report(result, out: str) -> None:
    print(result.parity)
    print(
        f"wrote {len(result.files)} files for ensemble '{result.spec.name}' "
        f"({len(result.spec.class_names)} classes, detector version {result.version}) into {out}"
    )


def run_yolo11(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.export.yolo11 import export_yolo11

    try:
        images = collect_images(args.parity_images)[:4] if args.parity_images else []
        result = export_yolo11(
            out=args.out,
            weights=args.weights,
            config=args.config,
            class_names=_classes(args),
            imgsz=args.imgsz,
            name=args.name,
            opset=args.opset,
            seed=args.seed,
            parity_images=images,
            profile=args.profile,
            replace=args.replace,
        )
    except (BonefracError, ValueError, FileNotFoundError) as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    _report(result, args.out)
    return 0


def run_frcnn(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.export.frcnn import export_frcnn

    try:
        classes = _classes(args)
        if not classes:
            raise ValueError("give the classes with --classes or --data")
        images = collect_images(args.parity_images)[:4] if args.parity_images else []
        result = export_frcnn(
            out=args.out,
            class_names=classes,
            arch=args.arch,
            weights=args.weights,
            min_size=args.min_size,
            max_size=args.max_size,
            name=args.name,
            opset=args.opset,
            seed=args.seed,
            parity_images=images,
            fp16_weights=not args.fp32,
            profile=args.profile,
            replace=args.replace,
        )
    except (BonefracError, ValueError, FileNotFoundError) as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    _report(result, args.out)
    return 0


def run_retarget(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.export.repository import retarget

    try:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            version, files = retarget(args.repository, model, profile=args.profile, out=args.out)
            print(
                f"{model}: {len(files)} files, detector version {version}, profile "
                f"{args.profile} -> {Path(args.out)}"
            )
    except BonefracError as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    return 0


def run_threshold(args: argparse.Namespace) -> int:
    import json

    from bonefrac.errors import BonefracError
    from bonefrac.export.repository import set_default_threshold

    try:
        conf = args.conf
        if args.from_eval:
            reports = json.loads(Path(args.from_eval).read_text())
            reports = reports if isinstance(reports, list) else [reports]
            found = [r for r in reports if r["model"]["name"] == args.model]
            if not found:
                raise ValueError(f"{args.from_eval} has no report for '{args.model}'")
            points = found[0].get("froc_thresholds") or {}
            conf = points.get(args.fp_rate)
            if conf is None:
                raise ValueError(
                    f"the report has no threshold at {args.fp_rate} FP/image (known: "
                    f"{', '.join(k for k, v in points.items() if v is not None) or 'none'}; "
                    "re-run bonefrac eval to get them)"
                )
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"a score threshold lies in [0, 1], not {conf}")
        set_default_threshold(args.repository, args.model, conf)
    except (BonefracError, ValueError, OSError, KeyError) as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model}: default score threshold {conf:.4f}")
    return 0


def run_int8(args: argparse.Namespace) -> int:
    from bonefrac.errors import BonefracError
    from bonefrac.export.quantize import quantize_yolo11

    try:
        images = collect_images([args.calibration_images])
        step = max(1, len(images) // max(1, args.count))
        spec, out = quantize_yolo11(
            repository=args.repository,
            model=args.model,
            calibration_images=images[::step][: args.count],
        )
    except (BonefracError, FileNotFoundError) as exc:
        print(f"bonefrac export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote INT8 ensemble '{spec.name}' into {out}")
    return 0
