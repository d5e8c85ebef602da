"""``bonefrac infer``: detect fractures on images and folders, through Triton or in-process."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bonefrac.detections import Detections
from bonefrac.dicom import read_image_bytes

#: File endings picked up when a folder is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm")


def collect_images(paths: list[str]) -> list[Path]:
    """Files named directly, plus image files found (recursively, sorted) in named folders.

    Raises:
        FileNotFoundError: naming a path that does not exist.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")
    return found


def record(path: Path, result: Detections | Exception) -> dict[str, Any]:
    """The JSON record of one image: detections, or the error that image got."""
    if isinstance(result, Exception):
        return {"image": str(path), "error": str(result)}
    height, width = result.image_size
    return {"image": str(path), "width": width, "height": height, "detections": result.to_records()}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer",
        help="detect fractures on images or folders",
        description=(
            "Detect fractures on image files and folders (searched recursively for "
            f"{', '.join(IMAGE_SUFFIXES)}) through a Triton server over gRPC, or in this process "
            "with --in-process (the reference pipeline, no server). Writes JSON: a list of "
            '{"image", "width", "height", "detections": [{"box": [x1, y1, x2, y2], "score", '
            '"class_id", "class_name"}]} with boxes in original-image pixels.'
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument(
        "--server",
        default="127.0.0.1:8001",
        metavar="HOST:PORT[,HOST:PORT]",
        help="Triton gRPC address(es); several are balanced round robin, skipping "
        "unhealthy ones (loopback or your own test hosts for load) (default: %(default)s)",
    )
    p.add_argument("--model", default="yolo11", help="ensemble to call (default: %(default)s)")
    p.add_argument("--json", metavar="OUT", help="write results as JSON to OUT ('-': stdout)")
    p.add_argument(
        "--conf",
        type=float,
        default=None,
        metavar="T",
        help="minimum score, 0-1 (default: the model's, 0.25)",
    )
    p.add_argument(
        "--iou",
        type=float,
        default=None,
        metavar="T",
        help="NMS IoU threshold, 0-1 (default: the model's, 0.7)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        metavar="S",
        help="deadline of each request in seconds (default: %(default)s)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the pipeline here with ONNX Runtime instead of calling a server",
    )
    p.add_argument(
        "--repository",
        default="model_repository",
        metavar="DIR",
        help="model repository for --in-process (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        images = collect_images(args.paths)
    except FileNotFoundError as exc:
        print(f"bonefrac infer: {exc}", file=sys.stderr)
        return 2
    if not images:
        print("bonefrac infer: no image files found in the given paths", file=sys.stderr)
        return 2
    for name, value, low_open in (("--conf", args.conf, False), ("--iou", args.iou, True)):
        if value is not None and not ((value > 0.0 if low_open else value >= 0.0) and value <= 1.0):
            print(f"bonefrac infer: {name} must be between 0 and 1, got {value}", file=sys.stderr)
            return 2

    detect = _make_detector(args)
    if detect is None:
        return 2
    progress = tqdm(
        total=len(images),
        unit="img",
        desc="infer",
        file=sys.stderr,
        disable=args.no_progress or len(images) < 2,
    )

    def one(path: Path) -> Detections | Exception:
        try:
            return detect(read_image_bytes(path.read_bytes()))
        except Exception as exc:  # reported per image; the others go on
            return exc
        finally:
            progress.update(1)

    with ThreadPoolExecutor(max_workers=1 if args.in_process else max(1, args.concurrency)) as pool:
        results = list(pool.map(one, images))
    progress.close()

    records = [record(p, r) for p, r in zip(images, results)]
    failures = [r for r in records if "error" in r]
    for r in failures:
        print(f"bonefrac infer: {r['image']}: {r['error']}", file=sys.stderr)
    if args.json:
        text = json.dumps(records, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    else:
        for r in records:
            if "error" not in r:
                print(_summary(r))
    if failures:
        print(f"bonefrac infer: {len(failures)} of {len(records)} images failed", file=sys.stderr)
        return 1
    return 0


def _summary(rec: dict[str, Any], *, top: int = 5) -> str:
    dets = rec["detections"]
    shown = ", ".join(f"{d['class_name']} {d['score']:.2f}" for d in dets[:top])
    more = f", +{len(dets) - top} more" if len(dets) > top else ""
    return f"{rec['image']}: {len(dets)} detections" + (f" ({shown}{more})" if dets else "")


def _make_detector(args: argparse.Namespace):
    from bonefrac.errors import BonefracError

    if args.in_process:
        from bonefrac.pipeline import InProcessPipeline

        try:
            pipeline = InProcessPipeline(args.repository, args.model)
        except BonefracError as exc:
            print(f"bonefrac infer: {exc}", file=sys.stderr)
            return None
        return lambda data: pipeline.detect(data, conf_threshold=args.conf, iou_threshold=args.iou)

    from bonefrac.client import connect

    try:
        client = connect(args.server, model=args.model, timeout_s=args.timeout_s)
    except ValueError as exc:
        print(f"bonefrac infer: {exc}", file=sys.stderr)
        return None
    try:
        client.status()
    except BonefracError as exc:
        print(f"bonefrac infer: {exc}", file=sys.stderr)
        return None
    return lambda data: client.detect(data, conf_threshold=args.conf, iou_threshold=args.iou)
