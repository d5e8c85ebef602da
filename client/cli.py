"""``bonefrac infer``: detect fractures on images and folders, through Triton or in-process."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bonefrac import _cli
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
    p = _cli.subcommand(subparsers, "infer", run)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    _cli.add_server(p)
    _cli.add_model(p, "ensemble to call")
    _cli.add_json(p, "write results as JSON to OUT ('-': stdout)")
    _cli.add_thresholds(p)
    p.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests in flight at once"
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        metavar="S",
        help="deadline of each request in seconds",
    )
    _cli.add_in_process(p)
    _cli.add_progress(p)


def run(args: argparse.Namespace) -> int:
    """Detect fractures on images or folders.

    Detect fractures on image files and folders (folders are searched recursively for JPEG,
    PNG, BMP, TIFF, WebP and DICOM files) through a Triton server over gRPC, or in this process
    with --in-process (the reference pipeline, no server). Prints a line per image, or writes
    JSON: a list of {"image", "width", "height", "detections": [{"box": [x1, y1, x2, y2],
    "score", "class_id", "class_name"}]} with boxes in original-image pixels. The exit code is
    1 when any image failed (each is named on stderr).

    Raises:
        UsageError: for paths with no images, or a model or server that cannot be used.
    """
    from tqdm import tqdm

    from bonefrac.errors import BonefracError

    with _cli.usage_errors(FileNotFoundError, ValueError, BonefracError):
        images = collect_images(args.paths)
        if not images:
            raise _cli.UsageError("no image files found in the given paths")
        detect = _make_detector(args)
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
    _write(records, args.json)
    if failures:
        print(f"bonefrac infer: {len(failures)} of {len(records)} images failed", file=sys.stderr)
        return 1
    return 0


def _write(records: list[dict[str, Any]], json_out: str | None) -> None:
    """The records as JSON to ``json_out`` ('-': stdout), or a summary line per image."""
    if not json_out:
        for r in records:
            if "error" not in r:
                print(_summary(r))
        return
    text = json.dumps(records, indent=2)
    if json_out == "-":
        print(text)
    else:
        Path(json_out).write_text(text + "\n")


def _summary(rec: dict[str, Any], *, top: int = 5) -> str:
    dets = rec["detections"]
    shown = ", ".join(f"{d['class_name']} {d['score']:.2f}" for d in dets[:top])
    more = f", +{len(dets) - top} more" if len(dets) > top else ""
    return f"{rec['image']}: {len(dets)} detections" + (f" ({shown}{more})" if dets else "")


def _make_detector(args: argparse.Namespace) -> Callable[[bytes], Detections]:
    """detect(image bytes) through the server (checked to answer) or in this process.

    Raises:
        BonefracError: for a model or server that cannot be used.
        ValueError: for a malformed --server list.
    """
    thresholds = {"conf_threshold": args.conf, "iou_threshold": args.iou}
    if args.in_process:
        from bonefrac.pipeline import InProcessPipeline

        pipeline = InProcessPipeline(args.repository, args.model)
        return lambda data: pipeline.detect(data, **thresholds)

    from bonefrac.client import connect

    client = connect(args.server, model=args.model, timeout_s=args.timeout_s)
    client.status()
    return lambda data: client.detect(data, **thresholds)
