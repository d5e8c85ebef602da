"""Export a detector to ONNX and a Triton model repository.

Export a trained detector to ONNX, check ONNX Runtime against PyTorch, and write the model and
its config.pbtxt files into a Triton model repository (a new detector version when one exists).
Needs the export extras: pip install 'bonefrac[export]' (not 'retarget').
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bonefrac import _cli
from bonefrac.client.cli import collect_images
from bonefrac.spec import CPU_LAYOUTS

#: What each serving profile of :data:`bonefrac.export.triton_config.PROFILES` runs.
PROFILE_MEANINGS = {
    "cpu": "ONNX Runtime in the Python backend (runs anywhere)",
    "gpu-onnx": "Triton's onnxruntime_onnx with TensorRT FP16",
    "gpu-trt": "a TensorRT plan built on the GPU node",
}

#: Errors the exporters raise for bad input, reported as a message (exit code 1).
_USER_ERRORS = (ValueError,)


def classes_from_data(path: str) -> list[str]:
    """The class names of a dataset yaml."""
    from bonefrac.dataset import YoloDataset

    return list(YoloDataset.from_yaml(path).names)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "export", doc=__doc__)
    kinds = p.add_subparsers(dest="kind", metavar="MODEL", required=True)
    for add in (_add_yolo11, _add_frcnn, _add_int8, _add_retarget, _add_threshold):
        add(kinds)


def _add_written_model(p: argparse.ArgumentParser, *, name: str) -> None:
    """Options of every exporter that writes a new model: classes, target, ONNX, parity."""
    names = p.add_mutually_exclusive_group()
    names.add_argument("--classes", nargs="+", metavar="NAME", help="class names in id order")
    _cli.add_data(names, "take class names from a dataset yaml", required=False)
    p.add_argument(
        "--out", default=_cli.DEFAULT_REPOSITORY, metavar="DIR", help="model repository to write"
    )
    p.add_argument("--name", default=name, help="ensemble name")
    _cli.add_choice(p, "--profile", PROFILE_MEANINGS, default="cpu")
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the newest detector version instead of adding version N+1",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--seed", type=int, default=0, help="seed for random init")
    p.add_argument(
        "--parity-images",
        metavar="PATH",
        nargs="*",
        default=[],
        help="images or folders for the parity check (first 4; random inputs if none)",
    )


def _add_yolo11(kinds: argparse._SubParsersAction) -> None:
    y = _cli.subcommand(kinds, "yolo11", run_yolo11, errors=_USER_ERRORS)
    src = y.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="PATH.pt", help="a trained Ultralytics checkpoint")
    src.add_argument(
        "--config",
        metavar="YAML",
        help="a model config such as yolo11n.yaml (random weights, seeded)",
    )
    y.add_argument("--imgsz", type=int, default=640, help="letterbox side")
    _add_written_model(y, name="yolo11")


def _add_frcnn(kinds: argparse._SubParsersAction) -> None:
    f = _cli.subcommand(kinds, "frcnn", run_frcnn, errors=_USER_ERRORS)
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="PATH.pth", help="a trained checkpoint (state_dict)")
    src.add_argument("--random", action="store_true", help="seeded random weights")
    _cli.add_frcnn_geometry(f)
    f.add_argument("--fp32", action="store_true", help="store weights in FP32 (twice the size)")
    _add_written_model(f, name="frcnn")


def _add_int8(kinds: argparse._SubParsersAction) -> None:
    q = _cli.subcommand(kinds, "int8", run_int8)
    _cli.add_repository(q)
    _cli.add_model(q, "the FP32 ensemble")
    q.add_argument(
        "--calibration-images",
        required=True,
        metavar="DIR",
        help="training images (never the split you evaluate on)",
    )
    q.add_argument("--count", type=int, default=64, help="calibration images used")


def _add_retarget(kinds: argparse._SubParsersAction) -> None:
    r = _cli.subcommand(kinds, "retarget", run_retarget)
    _cli.add_repository(r, "source repository")
    r.add_argument(
        "--models", default="yolo11,frcnn", metavar="NAME[,NAME]", help="ensembles to copy"
    )
    _cli.add_choice(r, "--profile", PROFILE_MEANINGS, required=True)
    r.add_argument("--out", required=True, metavar="DIR", help="target repository")
    r.add_argument(
        "--cpu-layout",
        choices=CPU_LAYOUTS,
        help="cpu profile: serve NAME as an ensemble of three models or as one model doing all "
        "three steps (default: as the source repository does)",
    )


def _add_threshold(kinds: argparse._SubParsersAction) -> None:
    t = _cli.subcommand(kinds, "threshold", run_threshold, errors=_USER_ERRORS)
    _cli.add_repository(t)
    _cli.add_model(t, default=None, required=True)
    how = t.add_mutually_exclusive_group(required=True)
    how.add_argument("--conf", type=float, help="the threshold")
    how.add_argument("--from-eval", metavar="REPORT.json", help="bonefrac eval --json output")
    t.add_argument("--fp-rate", default="1", help="false positives per image for --from-eval")


def _written_model(args: argparse.Namespace, *, images: int = 4) -> dict[str, Any]:
    """Keyword arguments every exporter takes, from :func:`_add_written_model`'s options."""
    classes = classes_from_data(args.data) if args.data else args.classes
    parity = collect_images(args.parity_images)[:images] if args.parity_images else []
    return {
        "out": args.out,
        "class_names": classes,
        "name": args.name,
        "opset": args.opset,
        "seed": args.seed,
        "parity_images": parity,
        "profile": args.profile,
        "replace": args.replace,
    }


def _report(result, out: str) -> int:
    print(result.parity)
    print(
        f"wrote {len(result.files)} files for ensemble '{result.spec.name}' "
        f"({len(result.spec.class_names)} classes, detector version {result.version}) into {out}"
    )
    return 0


def run_yolo11(args: argparse.Namespace) -> int:
    """Export an Ultralytics YOLO11 checkpoint or config.

    Export Ultralytics YOLO11 (opset 17, dynamic batch and size) as the ensemble NAME =
    NAME_preprocess -> NAME_detector -> NAME_postprocess.
    """
    from bonefrac.export.yolo11 import export_yolo11

    result = export_yolo11(
        **_written_model(args), weights=args.weights, config=args.config, imgsz=args.imgsz
    )
    return _report(result, args.out)


def run_frcnn(args: argparse.Namespace) -> int:
    """Export a torchvision Faster R-CNN checkpoint (or random weights).

    Export torchvision Faster R-CNN with the legacy exporter (opset 17, dynamic height, width
    and detection count; one image per call). Resize and normalisation are inside the graph.
    Large weights are stored as FP16 (--fp32 keeps them FP32).
    """
    from bonefrac.export.frcnn import export_frcnn

    common = _written_model(args)
    if not common["class_names"]:
        raise _cli.CommandError("give the classes with --classes or --data")
    result = export_frcnn(
        **common,
        arch=args.arch,
        weights=args.weights,
        min_size=args.min_size,
        max_size=args.max_size,
        fp16_weights=not args.fp32,
    )
    return _report(result, args.out)


def run_retarget(args: argparse.Namespace) -> int:
    """Rewrite an exported model for another profile (no torch needed).

    Copy an exported model from one repository to another with the configs of another profile,
    e.g. the CPU repository to a gpu-trt repository for a GPU node (which then builds its
    engine with NAME_detector/build_engine.sh).
    """
    from bonefrac.export.repository import retarget

    for model in _cli.split_list(args.models):
        version, files = retarget(
            args.repository, model, profile=args.profile, out=args.out, cpu_layout=args.cpu_layout
        )
        print(
            f"{model}: {len(files)} files, detector version {version}, profile "
            f"{args.profile} -> {Path(args.out)}"
        )
    return 0


def threshold_from_eval(report_path: str, model: str, fp_rate: str) -> float:
    """The operating point a ``bonefrac eval --json`` report measured for ``model``.

    Raises:
        CommandError: when the report has no entry for the model or no threshold at that rate.
    """
    reports = json.loads(Path(report_path).read_text())
    reports = reports if isinstance(reports, list) else [reports]
    found = [r for r in reports if r.get("model", {}).get("name") == model]
    if not found:
        raise _cli.CommandError(f"{report_path} has no report for '{model}'")
    points = found[0].get("froc_thresholds") or {}
    conf = points.get(fp_rate)
    if conf is None:
        known = ", ".join(k for k, v in points.items() if v is not None) or "none"
        raise _cli.CommandError(
            f"the report has no threshold at {fp_rate} FP/image (known: {known}; "
            "re-run bonefrac eval to get them)"
        )
    return conf


def run_threshold(args: argparse.Namespace) -> int:
    """Set an ensemble's default score threshold (e.g. its operating point on valid).

    Set the default score threshold of an ensemble (what requests without conf_threshold get;
    the UI starts there): a number, or the operating point a 'bonefrac eval --json' report
    measured (the lowest threshold that stays within --fp-rate false positives per image on
    that split). Rewrites the configs in place.
    """
    from bonefrac.export.repository import set_default_threshold

    conf = args.conf
    if args.from_eval:
        conf = threshold_from_eval(args.from_eval, args.model, args.fp_rate)
    if not 0.0 <= conf <= 1.0:
        raise _cli.CommandError(f"a score threshold lies in [0, 1], not {conf}")
    set_default_threshold(args.repository, args.model, conf)
    print(f"{args.model}: default score threshold {conf:.4f}")
    return 0


def run_int8(args: argparse.Namespace) -> int:
    """Quantize YOLO11 to INT8 for the CPU profile (ONNX Runtime static quantization).

    Quantize an exported YOLO11 detector to INT8 (QDQ, per-channel 7-bit weights; the stem
    and the Detect head stay FP32), calibrated on training images through bonefrac's
    pre-processing, and write it as the ensemble NAME_int8 next to the FP32 one.
    """
    from bonefrac.export.quantize import quantize_yolo11

    images = collect_images([args.calibration_images])
    step = max(1, len(images) // max(1, args.count))
    spec, out = quantize_yolo11(
        repository=args.repository,
        model=args.model,
        calibration_images=images[::step][: args.count],
    )
    print(f"wrote INT8 ensemble '{spec.name}' into {out}")
    return 0
