"""Summarise a YOLO dataset or convert it to COCO.

Dataset tooling for YOLO-format datasets (polygon or box labels): a summary with plots, and
COCO ground truth under a class protocol.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bonefrac import _cli
from bonefrac.dataset import Sample, YoloDataset, make_protocol, to_coco


def summarize(dataset: YoloDataset, split: str) -> dict[str, Any]:
    """Counts and size distributions of one split (JSON-ready)."""
    samples = list(dataset.samples(split))
    per_class = np.zeros(len(dataset.names), dtype=int)
    widths, heights, rel_areas, sizes = [], [], [], []
    for s in samples:
        np.add.at(per_class, s.class_ids, 1)
        sizes.append((s.width, s.height))
        if len(s.boxes):
            w, h = s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]
            widths += w.tolist()
            heights += h.tolist()
            rel_areas += (w * h / (s.width * s.height)).tolist()
    sizes_arr = np.array(sizes, dtype=float).reshape(-1, 2)

    def q(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        v = np.array(values)
        return {
            k: round(float(np.percentile(v, p)), 4)
            for k, p in (("min", 0), ("p25", 25), ("median", 50), ("p75", 75), ("max", 100))
        }

    return {
        "split": split,
        "images": len(samples),
        "empty_images": sum(1 for s in samples if len(s.boxes) == 0),
        "objects": int(per_class.sum()),
        "objects_per_class": {n: int(c) for n, c in zip(dataset.names, per_class)},
        "box_width_px": q(widths),
        "box_height_px": q(heights),
        "box_area_fraction": q(rel_areas),
        "image_width_px": q(sizes_arr[:, 0].tolist()),
        "image_height_px": q(sizes_arr[:, 1].tolist()),
        "_samples": samples,
    }


def plot_summary(dataset: YoloDataset, summaries: list[dict[str, Any]], out: Path) -> Path:
    """One PNG: objects per class per split, box sizes, image sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), dpi=110)
    names = list(dataset.names)
    x = np.arange(len(names))
    width = 0.8 / max(len(summaries), 1)
    for i, s in enumerate(summaries):
        counts = [s["objects_per_class"][n] for n in names]
        bars = axes[0].bar(
            x + i * width,
            counts,
            width,
            label=f"{s['split']} ({s['images']} img, {s['empty_images']} empty)",
        )
        axes[0].bar_label(bars, fontsize=7)
    axes[0].set_xticks(
        x + width * (len(summaries) - 1) / 2, names, rotation=30, ha="right", fontsize=8
    )
    axes[0].set_title("objects per class")
    axes[0].legend(fontsize=8)
    for s in summaries:
        samples: list[Sample] = s["_samples"]
        boxes = [b for smp in samples for b in smp.boxes]
        if boxes:
            b = np.array(boxes)
            axes[1].scatter(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], s=4, alpha=0.4, label=s["split"])
        wh = np.array([(smp.width, smp.height) for smp in samples])
        axes[2].scatter(wh[:, 0], wh[:, 1], s=6, alpha=0.4, label=s["split"])
    axes[1].set_title("box sizes (pixels)")
    axes[1].set_xlabel("width")
    axes[1].set_ylabel("height")
    axes[1].legend(fontsize=8)
    axes[2].set_title("image sizes (pixels)")
    axes[2].set_xlabel("width")
    axes[2].set_ylabel("height")
    axes[2].legend(fontsize=8)
    for ax in axes[1:]:
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{dataset.yaml_path.parent.name}: dataset summary")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "data", doc=__doc__)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = _cli.subcommand(sub, "summary", run_summary)
    s.add_argument("data", metavar="DATA.yaml", help="dataset yaml")
    s.add_argument("--split", action="append", help="split(s) to include (default: all)")
    s.add_argument("--out", metavar="DIR", help="write summary.png and summary.json here")
    c = _cli.subcommand(sub, "to-coco", run_to_coco)
    c.add_argument("data", metavar="DATA.yaml", help="dataset yaml")
    c.add_argument("--split", default="valid", help="split")
    _cli.add_protocol(c, "7class", "class protocol")
    c.add_argument("--out", required=True, metavar="FILE.json", help="COCO JSON to write")


def run_summary(args: argparse.Namespace) -> int:
    """Summarise a dataset: counts, box and image sizes, with plots.

    Per split: images, empty images, objects per class, box and image size distributions; --out
    writes summary.png and summary.json.
    """
    dataset = YoloDataset.from_yaml(args.data)
    splits = args.split or list(dataset.splits)
    summaries = [summarize(dataset, split) for split in splits]
    for s in summaries:
        print(
            f"{s['split']}: {s['images']} images ({s['empty_images']} without objects), "
            f"{s['objects']} objects"
        )
        for name, count in s["objects_per_class"].items():
            print(f"  {name:<20} {count}")
        print(f"  box width px {s['box_width_px']}, height px {s['box_height_px']}")
        print(f"  image width px {s['image_width_px']}, height px {s['image_height_px']}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        clean = [{k: v for k, v in s.items() if not k.startswith("_")} for s in summaries]
        (out / "summary.json").write_text(json.dumps(clean, indent=1) + "\n")
        print(
            f"wrote {plot_summary(dataset, summaries, out / 'summary.png')} and "
            f"{out / 'summary.json'}"
        )
    return 0


def run_to_coco(args: argparse.Namespace) -> int:
    """Write COCO JSON of a split under a class protocol.

    Write COCO ground truth (boxes from polygons) of one split."""
    dataset = YoloDataset.from_yaml(args.data)
    protocol = make_protocol(args.protocol, dataset.names)
    coco = to_coco(list(dataset.samples(args.split)), protocol, dataset.names)
    Path(args.out).write_text(json.dumps(coco) + "\n")
    print(
        f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} objects, "
        f"{len(coco['categories'])} categories ({args.protocol})"
    )
    return 0
