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


def plot(runs: Sequence[dict], folder: Path) -> list[Path]:
    """Throughput vs p99 latency per target, and the server-side breakdown bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for target in dict.fromkeys(r["target"] for r in runs):
        rows = [r for r in runs if r["target"] == target]
        ax.plot(
            [r["throughput_rps"] for r in rows], [r["p99_ms"] for r in rows], "o-", label=target
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
    ax.set_title("Throughput vs p99 latency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = folder / "throughput_vs_p99.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    with_server = [r for r in runs if r.get("server")]
    if with_server:
        phases = ["queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"]
        labels = [f"{r['target']} c{r['concurrency'] or r['rate_rps']}" for r in with_server]
        models = sorted({m for r in with_server for m in r["server"]})
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 5), dpi=120)
        bottom = [0.0] * len(with_server)
        for model in models:
            for phase in phases:
                values = [r["server"].get(model, {}).get(phase, 0.0) for r in with_server]
                if not any(values):
                    continue
                ax.bar(labels, values, bottom=bottom, label=f"{model} {phase[:-3]}")
                bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel("server time per request (ms)")
        ax.set_title("Server-side breakdown (Triton statistics)")
        ax.legend(fontsize=6, ncol=2)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
        fig.tight_layout()
        path = folder / "server_breakdown.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
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
