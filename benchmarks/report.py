"""Benchmark outputs: JSON, CSV, PNG plots and a Markdown report with machine and versions."""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = [
    "target",
    "concurrency",
    "rate_rps",
    "requests",
    "errors",
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "windows",
    "stable",
    "client_cpu_pct",
]


def environment() -> dict[str, Any]:
    """Machine, versions and date, for every report."""
    from importlib import metadata

    versions = {}
    for package in (
        "bonefrac",
        "nvidia-pytriton",
        "tritonclient",
        "onnxruntime",
        "numpy",
        "opencv-python-headless",
        "torch",
        "ultralytics",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": versions,
    }


def write_json(runs: Sequence[dict], path: Path, *, command: str) -> None:
    path.write_text(
        json.dumps({"command": command, **environment(), "runs": list(runs)}, indent=1) + "\n"
    )


def write_csv(runs: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot(runs: Sequence[dict], folder: Path) -> list[Path]:
    """Throughput vs p99 latency per target, and the server-side breakdown bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for target, model in dict.fromkeys((r["target"], r.get("model")) for r in runs):
        rows = [r for r in runs if r["target"] == target and r.get("model") == model]
        ax.plot(
            [r["throughput_rps"] for r in rows],
            [r["p99_ms"] for r in rows],
            "o-",
            label=f"{target} {model}" if model else target,
        )
        for r in rows:
            label = f"c{r['concurrency']}" if r["concurrency"] else f"{r['rate_rps']:g}/s"
            ax.annotate(
                label,
                (r["throughput_rps"], r["p99_ms"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    p99 = [r["p99_ms"] for r in runs if r["p99_ms"] == r["p99_ms"] and r["p99_ms"] > 0]
    if p99 and max(p99) > 10 * min(p99):
        ax.set_yscale("log")
    ax.set_title("Throughput vs p99 latency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    written.append(_save(fig, folder / "throughput_vs_p99.png"))

    with_server = [r for r in runs if r.get("server")]
    if with_server:
        # One bar per step: each composing model's queue and compute (input + infer + output),
        # the ensemble's own entry left out (it sums its steps).
        labels, segments = [], []
        for r in with_server:
            level = f"c{r['concurrency']}" if r["concurrency"] else f"{r['rate_rps']:g}/s"
            labels.append(f"{r.get('model') or r['target']} {level}")
            parts = {}
            for step, phases in r["server"].items():
                if r.get("model") and step == r["model"]:
                    continue
                short = step.rsplit("_", 1)[-1] if "_" in step else step
                parts[f"{short} queue"] = parts.get(f"{short} queue", 0.0) + phases.get(
                    "queue_ms", 0.0
                )
                parts[f"{short} compute"] = parts.get(f"{short} compute", 0.0) + sum(
                    phases.get(k, 0.0)
                    for k in ("compute_input_ms", "compute_infer_ms", "compute_output_ms")
                )
            segments.append(parts)
        keys = list(dict.fromkeys(k for parts in segments for k in parts))
        fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(labels)), 5), dpi=120)
        bottom = [0.0] * len(labels)
        for key in keys:
            values = [parts.get(key, 0.0) for parts in segments]
            ax.bar(labels, values, bottom=bottom, label=key, hatch="//" if "queue" in key else "")
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_yscale("log" if max(bottom) > 20 * max(1e-9, min(bottom)) else "linear")
        ax.set_ylabel("server time per request (ms)")
        ax.set_title("Server-side breakdown per step (Triton statistics; hatched: queue)")
        ax.legend(fontsize=7, ncol=2)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
        written.append(_save(fig, folder / "server_breakdown.png"))
    return written


def plot_scaling(runs: Sequence[dict], folder: Path) -> list[Path]:
    """How cost grows: throughput and p50 against image size (per model) and against the
    batch size of a detector request; and the CPU profile variants side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sized = [r for r in runs if r.get("image_side")]
    batched = [r for r in runs if r.get("batch") and r.get("input") == "gRPC"]
    if sized or batched:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=120)
        for ax, key, label in (
            (axes[0], "throughput_rps", "throughput (requests/s)"),
            (axes[1], "p50_ms", "p50 latency (ms)"),
        ):
            for model in dict.fromkeys(r["model"] for r in sized):
                rows = sorted(
                    (r for r in sized if r["model"] == model), key=lambda r: r["image_side"]
                )
                ax.plot([r["image_side"] for r in rows], [r[key] for r in rows], "o-", label=model)
            ax.set_yscale("log")
            ax.set_xlabel("longer side of the X-ray (px), concurrency 4")
            ax.set_ylabel(label)
            ax.set_title(f"Served ensemble: {label.split(' (')[0]} vs image size")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        ax = axes[2]
        for model in dict.fromkeys(r["model"] for r in batched):
            rows = sorted(
                (r for r in batched if r["model"] == model and r["concurrency"] == 1),
                key=lambda r: r["batch"],
            )
            ax.plot(
                [r["batch"] for r in rows],
                [r["throughput_rps"] * r["batch"] for r in rows],
                "o-",
                label=f"{model} images/s",
            )
            for r in rows:
                ax.annotate(
                    f"p50 {r['p50_ms']:.0f} ms",
                    (r["batch"], r["throughput_rps"] * r["batch"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, 4),
                )
        ax.set_xlabel("images per request (detector, concurrency 1)")
        ax.set_ylabel("images/s")
        ax.set_title("Detector vs batch size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / "scaling.png"))
    tuned = [r for r in runs if r.get("variant")]
    if tuned:
        top = max(r["concurrency"] for r in tuned)
        rows = [r for r in tuned if r["concurrency"] == top]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5), dpi=120)
        ax.barh([r["variant"] for r in rows], [r["throughput_rps"] for r in rows])
        for i, r in enumerate(rows):
            ax.text(
                r["throughput_rps"],
                i,
                f" {r['throughput_rps']:.1f}/s, p99 {r['p99_ms']:.0f} ms",
                va="center",
                fontsize=7,
            )
        ax.invert_yaxis()
        ax.set_xlabel(f"throughput at concurrency {top} (requests/s)")
        ax.set_title("CPU profile variants (YOLO11 ensemble)")
        written.append(_save(fig, folder / "tuning.png"))
    return written


def markdown(runs: Sequence[dict], *, command: str) -> str:
    env = environment()
    lines = [
        "# Benchmark report",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
        f"{env['machine']['platform']}, Python {env['machine']['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- command: `{command}`",
        "",
        "| target | concurrency | rate/s | requests | errors | throughput/s | p50 ms | p90 ms | "
        "p95 ms | p99 ms | client CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['target']} | {r['concurrency'] or ''} | {r['rate_rps'] or ''} | "
            f"{r['requests']} | {r['errors']} | {r['throughput_rps']:.2f} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['client_cpu_pct']} |"
        )
    return "\n".join(lines) + "\n"
