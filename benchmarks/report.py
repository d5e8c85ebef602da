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


def write_json(runs: Sequence[dict], path: Path, *, command: str, **facts: Any) -> None:
    """The record: command, date, machine, versions, any other ``facts`` of the run (e.g. the
    suite's AP50 figures and shipped variant) and every step."""
    record = {"command": command, **environment(), **facts, "runs": list(runs)}
    path.write_text(json.dumps(record, indent=1) + "\n")


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


def _level(r: dict) -> str:
    return f"c{r['concurrency']}" if r["concurrency"] else f"{r['rate_rps']:g}/s"


def sized(runs: Sequence[dict]) -> list[dict]:
    """The image-size steps."""
    return [r for r in runs if r.get("image_side")]


def batched(runs: Sequence[dict]) -> list[dict]:
    """The detector steps over gRPC (their batch-size axis)."""
    return [r for r in runs if r.get("batch") and r.get("input") == "gRPC"]


def tuned(runs: Sequence[dict]) -> list[dict]:
    """The CPU profile sweep's steps."""
    return [r for r in runs if r.get("variant")]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(runs: Sequence[dict], folder: Path) -> list[Path]:
    """Throughput vs p99 latency per target, and the server-side breakdown bars."""
    written = [_throughput_vs_p99(runs, folder)]
    if any(r.get("server") for r in runs):
        written.append(_server_breakdown(runs, folder))
    return written


def _throughput_vs_p99(runs: Sequence[dict], folder: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    lines = dict.fromkeys((r["target"], r.get("model"), r.get("layout")) for r in runs)
    for target, model, layout in lines:
        rows = [
            r
            for r in runs
            if (r["target"], r.get("model"), r.get("layout")) == (target, model, layout)
        ]
        ax.plot(
            [r["throughput_rps"] for r in rows],
            [r["p99_ms"] for r in rows],
            "o-",
            label=" ".join(str(x) for x in (target, model, layout) if x),
        )
        for r in rows:
            ax.annotate(
                _level(r),
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
    return _save(fig, folder / "throughput_vs_p99.png")


def _server_parts(r: dict) -> dict[str, float]:
    """One step's server time per request: each composing model's queue and compute (input +
    infer + output), the served model's own entry left out (it sums its steps) except for its
    queue in the one-model layout, where the steps have none of their own."""
    parts: dict[str, float] = {}
    for step, phases in r["server"].items():
        if r.get("model") and step == r["model"]:
            if not any("queue_ms" in p for s, p in r["server"].items() if s != step):
                parts["queue"] = phases.get("queue_ms", 0.0)  # one-model layout: its own queue
            continue
        short = step.rsplit("_", 1)[-1] if "_" in step else step
        parts[f"{short} queue"] = parts.get(f"{short} queue", 0.0) + phases.get("queue_ms", 0.0)
        parts[f"{short} compute"] = parts.get(f"{short} compute", 0.0) + sum(
            phases.get(k, 0.0)
            for k in ("compute_input_ms", "compute_infer_ms", "compute_output_ms")
        )
    return parts


def _server_breakdown(runs: Sequence[dict], folder: Path) -> Path:
    plt = _pyplot()
    with_server = [r for r in runs if r.get("server")]
    labels = [f"{r.get('model') or r['target']} {_level(r)}" for r in with_server]
    segments = [_server_parts(r) for r in with_server]
    keys = list(dict.fromkeys(k for parts in segments for k in parts))
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(labels)), 5), dpi=120)
    bottom = [0.0] * len(labels)
    for key in keys:
        values = [parts.get(key, 0.0) for parts in segments]
        ax.bar(labels, values, bottom=bottom, label=key, hatch="//" if "queue" in key else "")
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_yscale("log" if max(bottom) > 20 * max(1e-9, min(bottom)) else "linear")
    ax.set_ylabel("server time per request (ms)")
    ax.set_title("Server-side breakdown per step (Triton statistics and metrics; hatched: queue)")
    ax.legend(fontsize=7, ncol=2)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    return _save(fig, folder / "server_breakdown.png")


def plot_scaling(runs: Sequence[dict], folder: Path) -> list[Path]:
    """How cost grows: throughput and p50 against image size (per model) and against the
    batch size of a detector request; and the CPU profile variants side by side."""
    written = []
    if sized(runs) or batched(runs):
        written.append(_scaling(runs, folder))
    if tuned(runs):
        written.append(_tuning(runs, folder))
    return written


def _scaling(runs: Sequence[dict], folder: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=120)
    for ax, key, label in (
        (axes[0], "throughput_rps", "throughput (requests/s)"),
        (axes[1], "p50_ms", "p50 latency (ms)"),
    ):
        _size_panel(ax, sized(runs), key, label)
    _batch_panel(axes[2], batched(runs))
    return _save(fig, folder / "scaling.png")


def _size_panel(ax, rows: list[dict], key: str, label: str) -> None:
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["image_side"])
        ax.plot([r["image_side"] for r in mine], [r[key] for r in mine], "o-", label=model)
    ax.set_yscale("log")
    ax.set_xlabel("longer side of the X-ray (px), concurrency 4")
    ax.set_ylabel(label)
    ax.set_title(f"Served: {label.split(' (')[0]} vs image size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _batch_panel(ax, rows: list[dict]) -> None:
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted(
            (r for r in rows if r["model"] == model and r["concurrency"] == 1),
            key=lambda r: r["batch"],
        )
        images = [r["throughput_rps"] * r["batch"] for r in mine]
        ax.plot([r["batch"] for r in mine], images, "o-", label=f"{model} images/s")
        for r, y in zip(mine, images):
            ax.annotate(
                f"p50 {r['p50_ms']:.0f} ms",
                (r["batch"], y),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xlabel("images per request (detector, concurrency 1)")
    ax.set_ylabel("images/s")
    ax.set_title("Detector vs batch size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _tuning(runs: Sequence[dict], folder: Path) -> Path:
    plt = _pyplot()
    top = max(r["concurrency"] for r in tuned(runs))
    rows = [r for r in tuned(runs) if r["concurrency"] == top]
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
    ax.set_title("CPU profile variants (YOLO11)")
    return _save(fig, folder / "tuning.png")


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


# --------------------------------------------------------------------------------------------
# RESULTS.md: the whole benchmark's report, written from its record (runs.json) alone
# --------------------------------------------------------------------------------------------

_INTRO = (
    "Measured by `make bench` in one run on one machine; every ratio below compares numbers "
    "measured side by side in that run (but the Faster R-CNN speed-up over 2026-11-24, set "
    "against a figure from that day's run), on the same images: the valid split of the bone "
    "fracture X-ray dataset (Roboflow Universe, veda/bone-fracture-detection-daoon v4, "
    "CC BY 4.0)."
)
_METHOD = (
    "- method: closed-loop clients (asyncio gRPC), warm-up, then measurement windows until "
    "two agree within 10 % on throughput; percentiles over the measured requests; the "
    "server's own breakdown from Triton's statistics API (and, for a model served as one "
    "Python-backend model, its per-step times from Triton's metrics port); the client's CPU "
    "use per step, and the server's (tritonserver with its Python-backend stubs, or the "
    "FastAPI process) per request."
)
_TARGETS = (
    "- targets: `triton` is the served model over gRPC (encoded image bytes in, boxes "
    "out; the `cpu` profile's layout as shipped); `in-process` the same decode + letterbox + "
    "ONNX Runtime + NMS in one process, no "
    "server: one stream (one pipeline called by one thread, ONNX Runtime on every core) over "
    "the sweep, and several pipelines (each its own ONNX Runtime session) on as many threads "
    "at the highest level; the best of them is the in-process ceiling; `fastapi` a plain "
    "FastAPI + ONNX Runtime HTTP server with the same pipeline; `ultralytics-triton` the "
    'layout of Ultralytics\' Triton guide, `YOLO("grpc://...")` against the served detector '
    "(decode, letterbox and NMS in the client), on one or several client threads; "
    "`ultralytics` `YOLO(weights).predict()` in PyTorch; `torchvision` torchvision's Faster "
    "R-CNN in PyTorch with the served model's weights (taken back from its ONNX graph; a test "
    "checks it gives ONNX Runtime's detections); `perf_analyzer` Triton's own load generator "
    "on the same server, model and images."
)


def results_markdown(record: dict[str, Any], *, plots: str = "results") -> str:
    """``RESULTS.md`` from a suite record (``runs.json``): every figure comes from it; plots are
    linked from the folder ``plots`` (relative to the report)."""
    runs = record["runs"]
    lines = _results_header(record)
    lines += _targets_section(runs, record.get("ap50") or {}, record.get("ap50_source"))
    lines += _cpu_section(runs)
    lines += _tuning_section(runs, record.get("shipped_variant"))
    lines += _direct_section(runs)
    lines += _sizes_section(runs)
    lines += _all_steps_section(runs)
    lines += ["", "Plots (next to the JSON and CSV of every step):", ""]
    lines += [f"![{name}]({plots}/{name}.png)" for name in suite_plot_names(runs)]
    return "\n".join(lines) + "\n"


def _results_header(record: dict[str, Any]) -> list[str]:
    machine = record["machine"]
    took = f" (took {record['elapsed_s'] / 60:.1f} min)" if "elapsed_s" in record else ""
    return [
        "# Benchmark results",
        "",
        _INTRO,
        "",
        f"- command: `{record['command']}`",
        f"- date: {record.get('started', record['date'])}{took}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
        _METHOD,
        _TARGETS,
    ]


def _section(title: str, columns: list[str], rows: list[str], *after: str) -> list[str]:
    """A Markdown section: its title, a table and any paragraphs after it."""
    lines = [
        "",
        f"## {title}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    lines += rows
    for paragraph in after:
        lines += ["", paragraph]
    return lines


def _targets_section(runs: list[dict], ap: dict, ap_source: str | None) -> list[str]:
    from bonefrac.benchmarks.targets import FRCNN_BEFORE, verdicts

    found = verdicts(runs, ap)
    rows = [f"| {a} | {b} | {c} |" for a, b, c in found]
    after = [f"AP50 figures: {ap_source}."] if ap and ap_source else []
    if any("2026-11-24" in label for label, _, _ in found):
        after.append(
            f"Faster R-CNN of 2026-11-24: {FRCNN_BEFORE['source']}. That figure is from another "
            "run, on another host: these hosts differ in speed from one session to the next as "
            "much as the models do, so its speed-up measures the host as well (the AP50 beside "
            "it does not depend on the host)."
        )
    return _section("Targets", ["target", "measured", "verdict"], rows, *after)


def _cpu_section(runs: list[dict]) -> list[str]:
    """Where the CPU goes: each main target's (and layout's) highest-throughput step, its CPU
    time per request in the load generator and in the server, and the cores that kept busy."""
    from bonefrac.benchmarks.targets import cpu_ms_per_request, is_main

    tops: dict[tuple, dict] = {}
    for r in (r for r in runs if is_main(r) and cpu_ms_per_request(r) is not None):
        key = (r["target"], r.get("model"), r.get("layout"))
        if key not in tops or r["throughput_rps"] > tops[key]["throughput_rps"]:
            tops[key] = r
    if not any(r.get("server_cpu_ms") is not None for r in tops.values()):
        return []
    rows = []
    for r in tops.values():
        total = cpu_ms_per_request(r)
        server = r.get("server_cpu_ms")
        rows.append(
            f"| {r['target']} | {r.get('model', '')} | {r.get('layout') or ''} | "
            f"{r['concurrency']} | {r['throughput_rps']:.2f} | "
            f"{10.0 * r['client_cpu_pct'] / r['throughput_rps']:.2f} | "
            f"{'' if server is None else f'{server:.2f}'} | {total:.2f} | "
            f"{total * r['throughput_rps'] / 1000.0:.2f} |"
        )
    return _section(
        "CPU per request (each target's best step)",
        ["target", "model", "layout", "concurrency", "throughput/s", "load generator ms"]
        + ["server ms", "total ms", "cores busy"],
        rows,
        "CPU time (user + system) over the measured windows, per completed request: the load "
        "generator's process (for `in-process` and `ultralytics`, the whole pipeline runs "
        "there) and the server's processes (tritonserver and its Python-backend stubs; the "
        "FastAPI process). Cores busy = total x throughput: on a saturated machine throughput "
        "is at most the cores over the total, so a server that costs more CPU per request than "
        "the in-process pipeline cannot reach its throughput.",
    )


def _tuning_section(runs: list[dict], shipped: str | None) -> list[str]:
    """Each CPU profile variant at concurrency 1 and at the highest level."""
    steps = tuned(runs)
    if not steps:
        return []
    top = max(r["concurrency"] for r in steps)
    best = max((r for r in steps if r["concurrency"] == top), key=lambda r: r["throughput_rps"])
    rows, nan = [], float("nan")
    for variant in dict.fromkeys(r["variant"] for r in steps):
        one = next((r for r in steps if r["variant"] == variant and r["concurrency"] == 1), {})
        hi = next((r for r in steps if r["variant"] == variant and r["concurrency"] == top), {})
        server = hi.get("server", {})
        det = dict(server.get("yolo11_detector", {}))
        det.setdefault("queue_ms", server.get("yolo11", {}).get("queue_ms", 0))  # one model
        mark = " **(fastest)**" if hi is best else ""
        mark += " (shipped)" if variant == shipped else ""
        rows.append(
            f"| {variant}{mark} | {one.get('p50_ms', nan):.1f} | "
            f"{hi.get('throughput_rps', nan):.2f} | {hi.get('p99_ms', nan):.0f} | "
            f"{det.get('queue_ms', 0):.1f} + {det.get('compute_infer_ms', 0):.1f} |"
        )
    columns = ["variant", "p50 ms at c1", f"throughput/s at c{top}", f"p99 ms at c{top}"]
    columns.append(f"server queue + infer ms (detector) at c{top}")
    return _section("CPU profile tuning (YOLO11, one server per variant)", columns, rows)


def _direct_section(runs: list[dict]) -> list[str]:
    direct = [r for r in runs if r["target"] == "triton-detector"]
    if not direct:
        return []
    rows = [
        f"| {r['model']} | {r['input']} | {r['batch']} | {r['concurrency']} | "
        f"{r['throughput_rps']:.2f} | {r['throughput_rps'] * r['batch']:.2f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        for r in direct
    ]
    return _section(
        "Preprocessed tensors straight to the detector",
        ["model", "input", "batch", "concurrency", "requests/s", "images/s", "p50 ms", "p99 ms"],
        rows,
        "Faster R-CNN's exported graph takes one image per call (its output has a different "
        "number of boxes per image), so it has no batch-size axis.",
    )


def _preprocess_ms(r: dict) -> float:
    """The served preprocess step's own time per request (Triton's statistics)."""
    return r.get("server", {}).get(f"{r['model']}_preprocess", {}).get("compute_infer_ms", 0)


def _sizes_section(runs: list[dict]) -> list[str]:
    if not sized(runs):
        return []
    rows = [
        f"| {r['model']} | {r['image_side']} | {r['concurrency']} | "
        f"{r['throughput_rps']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{_preprocess_ms(r):.1f} |"
        for r in sized(runs)
    ]
    return _section(
        "Cost against image size (X-rays resized to the longer side, JPEG)",
        ["model", "longer side px", "concurrency", "throughput/s", "p50 ms", "p99 ms"]
        + ["preprocess ms (server)"],
        rows,
    )


def _all_steps_section(runs: list[dict]) -> list[str]:
    rows = []
    for r in runs:
        cpu = r["client_cpu_pct"] if r["client_cpu_pct"] is not None else ""
        unstable = "*" if r.get("stable") is False else ""
        rows.append(
            f"| {r['target']} | {r.get('model', '')} | {_setting(r)} "
            f"| {r.get('image_side') or 'as stored'} | {r.get('batch') or 1} | "
            f"{r['concurrency']} | {r['throughput_rps']:.2f}{unstable} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {cpu} |"
        )
    after = []
    if any(r.get("stable") is False for r in runs):
        after.append(
            "\\* not stable: no two measurement windows agreed within the stability bound "
            "(perf_analyzer: its last trial); reported as measured."
        )
    columns = ["target", "model", "variant / input / layout", "image side", "batch", "concurrency"]
    columns += ["throughput/s", "p50 ms", "p90 ms", "p99 ms", "errors", "client CPU %"]
    return _section("All steps", columns, rows, *after)


def _setting(r: dict) -> str:
    """What a step ran with beyond its target: a tuning variant, an input or a layout."""
    return r.get("variant") or r.get("input") or r.get("layout") or ""


def suite_plot_names(runs: Sequence[dict]) -> list[str]:
    """The plots :func:`write_results` draws for these steps (file names without ``.png``)."""
    from bonefrac.benchmarks.targets import is_main

    main = [r for r in runs if is_main(r)]
    names = ["throughput_vs_p99"]
    names += ["server_breakdown"] if any(r.get("server") for r in main) else []
    names += ["scaling"] if sized(runs) or batched(runs) else []
    names += ["tuning"] if tuned(runs) else []
    return names


def draw_results(runs: Sequence[dict], out: Path) -> list[Path]:
    """The suite's plots (:func:`suite_plot_names`) in ``out``."""
    from bonefrac.benchmarks.targets import is_main

    return plot([r for r in runs if is_main(r)], out) + plot_scaling(runs, out)


def write_report(record: dict[str, Any], out: Path, report_path: Path) -> Path:
    """``RESULTS.md`` at ``report_path`` from the record, its plots linked from ``out``."""
    report_path.write_text(results_markdown(record, plots=os.path.relpath(out, report_path.parent)))
    return report_path


def write_results(record: dict[str, Any], out: Path, *, report_path: Path | None = None) -> Path:
    """The suite's outputs from its record: ``runs.json`` (the record itself), ``runs.csv`` and
    the plots in ``out``, and ``RESULTS.md`` at ``report_path`` (default ``out/RESULTS.md``).
    Returns the report's path."""
    (out / "runs.json").write_text(json.dumps(record, indent=1) + "\n")
    write_csv(record["runs"], out / "runs.csv")
    draw_results(record["runs"], out)
    return write_report(record, out, report_path or out / "RESULTS.md")


def main(argv: list[str] | None = None) -> int:
    """Rewrite ``RESULTS.md`` from a committed record (no measuring)."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m bonefrac.benchmarks.report",
        description="Write RESULTS.md from a make-bench record (runs.json); measures nothing.",
    )
    p.add_argument("--record", type=Path, default=Path("benchmarks/results/runs.json"))
    p.add_argument("--report", type=Path, default=Path("benchmarks/RESULTS.md"))
    p.add_argument("--plots", action="store_true", help="redraw the PNG files beside the record")
    args = p.parse_args(argv)
    record = json.loads(args.record.read_text())
    if args.plots:
        draw_results(record["runs"], args.record.parent)
    print(f"wrote {write_report(record, args.record.parent, args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
