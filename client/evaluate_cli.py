"""``bonefrac eval``: COCO AP, FROC and image-level metrics of served (or in-process) models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bonefrac import _cli


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "eval", run)
    _cli.add_data(p)
    p.add_argument("--split", default="valid", help="split to score")
    _cli.add_model(p, "ensemble(s) to score, comma-separated", metavar="NAME[,NAME]")
    _cli.add_server(p)
    _cli.add_protocol(p, "6class", "class protocol (the published one for this data)")
    p.add_argument(
        "--threshold",
        type=_cli.score,
        default=0.25,
        metavar="T",
        help="operating score for image-level sensitivity/specificity",
    )
    _cli.add_json(p, "write the report(s) as JSON")
    p.add_argument("--plots", metavar="DIR", help="write froc.png and pr.png into DIR")
    _cli.add_in_process(p)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N images")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: ~/.cache/bonefrac/eval)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    _cli.add_progress(p)


def format_report(r: dict) -> str:
    lines = [
        f"{r['model']['name']} ({r['model']['source']}) on {r['data']['split']} "
        f"({r['data']['images']} images, {r['counts']['objects']} objects), "
        f"protocol {r['protocol']['name']}"
        + ("  [cached]" if r.get("cache", {}).get("hit") else ""),
        f"  AP50-95 {r['ap50_95']:.4f}   AP50 {r['ap50']:.4f}   AP75 {r['ap75']:.4f}",
        "  FROC sensitivity at FP/image: "
        + "  ".join(f"{k}: {v:.3f}" for k, v in r["froc"].items())
        + f"   mean {r['froc_mean']:.3f}",
        f"  image level: AUROC {_fmt(r['image_auroc'])}, at score >= {r['operating_threshold']}: "
        f"sensitivity {_fmt(r['image_sensitivity'])}, specificity {_fmt(r['image_specificity'])}",
        "  per-class AP50-95 / AP50:",
    ]
    for name, ap in r["per_class_ap"].items():
        lines.append(f"    {name:<20} {_fmt(ap)} / {_fmt(r['per_class_ap50'][name])}")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    """Score models on a labelled dataset (COCO AP, FROC, image AUROC).

    Run every image of a dataset split through the served ensemble (or the same pipeline in-
    process) and report COCO AP50-95/AP50/AP75 and per-class AP, FROC sensitivity at 0.125-8
    false positives per image, and image-level AUROC, sensitivity and specificity. Results
    are cached by model and dataset content, protocol and thresholds.

    Score every model named, print and write the reports.

    Raises:
        BonefracError: for a dataset, model or server that cannot be used.
    """
    from bonefrac.client.evaluate import (
        default_cache_dir,
        evaluate,
        in_process_model,
        served_model,
    )

    cache = (
        None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    )
    names = _cli.split_list(args.model)
    if not names:
        raise _cli.UsageError("--model names no ensemble")
    reports = []
    for name in names:
        model = (
            in_process_model(args.repository, name)
            if args.in_process
            else served_model(args.server, name)
        )
        report = evaluate(
            model,
            data=args.data,
            split=args.split,
            protocol=args.protocol,
            operating_threshold=args.threshold,
            concurrency=args.concurrency,
            cache_dir=cache,
            progress=not args.no_progress,
            limit=args.limit,
        )
        print(format_report(report))
        reports.append(report)
    _write(args, reports)
    return 0


def _write(args: argparse.Namespace, reports: list[dict]) -> None:
    """--json and --plots."""
    from bonefrac.client.evaluate import plot_froc, plot_pr

    if args.json:
        Path(args.json).write_text(
            json.dumps(reports[0] if len(reports) == 1 else reports, indent=1) + "\n"
        )
        print(f"wrote {args.json}")
    if args.plots:
        folder = Path(args.plots)
        folder.mkdir(parents=True, exist_ok=True)
        print(
            f"wrote {plot_froc(reports, folder / 'froc.png')} and "
            f"{plot_pr(reports, folder / 'pr.png')}"
        )
