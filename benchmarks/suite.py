"""The whole benchmark (``make bench``): every comparison of ``benchmarks/RESULTS.md`` measured side
by side in one run on this machine, and the report written from what was measured.

Starts its own tritonserver on loopback (free ports) with the repository's models, then:
served YOLO11 vs the in-process ceiling, a FastAPI + ONNX Runtime server, Ultralytics predict and
perf_analyzer over a concurrency sweep; INT8 vs FP32; Faster R-CNN; and cost against image size
(512 to 2048 px X-rays).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _resized_copies(images: list[bytes], side: int) -> list[bytes]:
    import cv2

    from bonefrac.processing import decode_image

    out = []
    for data in images:
        img = decode_image(data)
        h, w = img.shape[:2]
        r = side / max(h, w)
        img = cv2.resize(
            img,
            (max(1, round(w * r)), max(1, round(h * r))),
            interpolation=cv2.INTER_CUBIC if r > 1 else cv2.INTER_AREA,
        )
        out.append(
            cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        )
    return out


async def _sweep(
    target,
    payloads,
    *,
    name,
    levels,
    stats=None,
    window_s,
    warmup_s,
    max_windows,
    stability=0.1,
    extra: dict[str, Any] | None = None,
) -> list[dict]:
    from bonefrac.benchmarks import loadgen

    runs = []
    for c in levels:
        step = await loadgen.run_step(
            target,
            payloads,
            name=name,
            concurrency=c,
            stats=stats,
            window_s=window_s,
            warmup_s=warmup_s,
            max_windows=max_windows,
            stability=stability,
        )
        row = {**step.to_dict(), **(extra or {})}
        runs.append(row)
        print(
            f"  {name} c{c} {extra or ''}: {step.throughput_rps:.2f}/s p50 {step.p50_ms:.1f} ms "
            f"p99 {step.p99_ms:.1f} ms errors {step.errors} client CPU {step.client_cpu_pct}%",
            flush=True,
        )
    return runs


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from bonefrac.benchmarks import loadgen, perf_analyzer
    from bonefrac.benchmarks.fastapi_baseline import FastApiServer, http_target
    from bonefrac.benchmarks.soak import load_images
    from bonefrac.server import TritonServer

    repo = Path(args.repository)
    models = [m for m in ("yolo11", "yolo11_int8", "frcnn") if (repo / m).is_dir()]
    images = load_images(args.images, limit=32)
    levels = [int(c) for c in args.concurrency.split(",")]
    timing = dict(
        window_s=args.window_s,
        warmup_s=args.warmup_s,
        max_windows=args.max_windows,
        stability=args.stability_pct / 100.0,
    )
    runs: list[dict] = []
    server = TritonServer(
        repo,
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        model_control="explicit",
        load_models=models,
        startup_timeout_s=300,
    )
    fastapi = None
    with server:
        url = server.grpc_url

        async def main() -> None:
            for model in models:
                target, stats, close = loadgen.triton_target(url, model)
                print(f"{model} over gRPC", flush=True)
                try:
                    sweep = levels if model != "frcnn" else [c for c in levels if c <= 4]
                    runs.extend(
                        await _sweep(
                            target,
                            images,
                            name="triton",
                            levels=sweep,
                            stats=stats,
                            extra={"model": model},
                            **timing,
                        )
                    )
                finally:
                    await close()
            print("in-process ceiling", flush=True)
            runs.extend(
                await _sweep(
                    loadgen.in_process_target(str(repo), "yolo11"),
                    images,
                    name="in-process",
                    levels=levels,
                    extra={"model": "yolo11"},
                    **timing,
                )
            )
            target, close = http_target(fastapi.url)
            print("FastAPI + ONNX Runtime", flush=True)
            try:
                runs.extend(
                    await _sweep(
                        target,
                        images,
                        name="fastapi",
                        levels=levels,
                        extra={"model": "yolo11"},
                        **timing,
                    )
                )
            finally:
                await close()
            if args.weights:
                print("Ultralytics predict (PyTorch)", flush=True)
                target = loadgen.ultralytics_target(args.weights, imgsz=args.imgsz)
                runs.extend(
                    await _sweep(
                        target,
                        images,
                        name="ultralytics",
                        levels=[c for c in levels if c <= 4],
                        extra={"model": "yolo11"},
                        **timing,
                    )
                )
            for side in args.sizes:
                scaled = _resized_copies(images[:8], side)
                for model in [m for m in models if m != "yolo11_int8"]:
                    target, stats, close = loadgen.triton_target(url, model)
                    try:
                        runs.extend(
                            await _sweep(
                                target,
                                scaled,
                                name="triton",
                                levels=[4],
                                stats=stats,
                                extra={"model": model, "image_side": side},
                                **timing,
                            )
                        )
                    finally:
                        await close()

        fastapi = FastApiServer(str(repo), "yolo11")
        try:
            asyncio.run(main())
        finally:
            fastapi.stop()
        if not args.no_perf_analyzer:
            binary = perf_analyzer.locate() or perf_analyzer.install()
            print("perf_analyzer", flush=True)
            for c in levels:
                row = perf_analyzer.run(
                    binary,
                    url=url,
                    model="yolo11",
                    images=images,
                    concurrency=c,
                    window_s=args.window_s,
                    stability_pct=int(args.stability_pct),
                )
                row["model"] = "yolo11"
                runs.append(row)
                print(f"  perf_analyzer c{c}: {row['throughput_rps']:.2f}/s", flush=True)
    return {"runs": runs, "models": models}


def _best(runs, **match) -> dict | None:
    rows = [
        r for r in runs if all(r.get(k) == v for k, v in match.items()) and not r.get("image_side")
    ]
    return max(rows, key=lambda r: r["throughput_rps"]) if rows else None


def _at(runs, c, **match) -> dict | None:
    rows = [
        r
        for r in runs
        if r.get("concurrency") == c
        and not r.get("image_side")
        and all(r.get(k) == v for k, v in match.items())
    ]
    return rows[0] if rows else None


def targets_table(runs: list[dict]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the targets of issue 7."""
    rows = []
    served = _best(runs, target="triton", model="yolo11")
    ceiling = _best(runs, target="in-process")
    if served and ceiling:
        ratio = served["throughput_rps"] / ceiling["throughput_rps"]
        rows.append(
            (
                "served best throughput >= 0.9 x in-process ceiling",
                f"{served['throughput_rps']:.2f} / {ceiling['throughput_rps']:.2f} = {ratio:.2f}",
                "met" if ratio >= 0.9 else "not met",
            )
        )
    s1, i1 = _at(runs, 1, target="triton", model="yolo11"), _at(runs, 1, target="in-process")
    if s1 and i1:
        gap = s1["p50_ms"] - i1["p50_ms"]
        rows.append(
            (
                "served p50 at concurrency 1 within 3 ms of in-process",
                f"{s1['p50_ms']:.1f} - {i1['p50_ms']:.1f} = {gap:.1f} ms",
                "met" if gap <= 3 else "not met",
            )
        )
    ultra = _best(runs, target="ultralytics")
    if served and ultra:
        ratio = served["throughput_rps"] / ultra["throughput_rps"]
        rows.append(
            (
                "served >= 1.5 x Ultralytics predict throughput",
                f"{ratio:.2f} x",
                "met" if ratio >= 1.5 else "not met",
            )
        )
    for c in (4, 8):
        s, f = _at(runs, c, target="triton", model="yolo11"), _at(runs, c, target="fastapi")
        if s and f:
            ok = s["throughput_rps"] > f["throughput_rps"] and s["p99_ms"] < f["p99_ms"]
            rows.append(
                (
                    f"better throughput and p99 than FastAPI at concurrency {c}",
                    f"{s['throughput_rps']:.2f} vs {f['throughput_rps']:.2f}/s, p99 "
                    f"{s['p99_ms']:.0f} vs {f['p99_ms']:.0f} ms",
                    "met" if ok else "not met",
                )
            )
    diffs = []
    for r in runs:
        if r["target"] == "perf_analyzer":
            ours = _at(runs, r["concurrency"], target="triton", model="yolo11")
            if ours:
                diffs.append(
                    abs(ours["throughput_rps"] - r["throughput_rps"]) / r["throughput_rps"]
                )
    if diffs:
        worst = max(diffs)
        rows.append(
            (
                "load generator and perf_analyzer agree within 10 % on throughput",
                f"largest difference {100 * worst:.1f} %",
                "met" if worst <= 0.1 else "not met",
            )
        )
    fp32, int8 = (
        _best(runs, target="triton", model="yolo11"),
        _best(runs, target="triton", model="yolo11_int8"),
    )
    if fp32 and int8:
        rows.append(
            (
                "INT8 speed-up over FP32 (served, best throughput)",
                f"{int8['throughput_rps'] / fp32['throughput_rps']:.2f} x",
                "measured",
            )
        )
    return rows


def write_results(
    result: dict,
    out: Path,
    *,
    command: str,
    started: str,
    elapsed_s: float,
    ap: dict[str, float] | None = None,
) -> Path:
    from bonefrac.benchmarks import report

    env = report.environment()
    runs = result["runs"]
    lines = [
        "# Benchmark results",
        "",
        f"- command: `{command}`",
        f"- date: {started} (took {elapsed_s / 60:.1f} min)",
        f"- machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
        f"{env['machine']['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "- method: closed-loop clients (asyncio gRPC), warm-up, then measurement windows until "
        "two agree within 10 % on throughput; medians and percentiles over the measured "
        "requests; every comparison in one run on the same images.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets_table(runs)]
    if ap:
        lines += [
            "",
            "INT8 accuracy (bonefrac eval, valid, 6class): "
            + ", ".join(f"{k} AP50 {v:.4f}" for k, v in ap.items()),
        ]
    lines += [
        "",
        "## All steps",
        "",
        "| target | model | image side | concurrency | throughput/s | p50 ms | p90 ms | "
        "p99 ms | errors | client CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['target']} | {r.get('model', '')} | {r.get('image_side') or 'as stored'} | "
            f"{r['concurrency']} | {r['throughput_rps']:.2f} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r['client_cpu_pct'] if r['client_cpu_pct'] is not None else ''} |"
        )
    lines += ["", "Plots: `throughput_vs_p99.png`, `server_breakdown.png` next to this file."]
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    report.write_json(runs, out / "runs.json", command=command)
    report.write_csv(runs, out / "runs.csv")
    report.plot(runs, out)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bonefrac.benchmarks.suite", description=__doc__)
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--images", required=True, help="X-rays to send (the valid split)")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[512, 1024, 2048],
        help="image sides for the scaling steps",
    )
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--max-windows", type=int, default=4)
    p.add_argument(
        "--stability-pct",
        type=float,
        default=10.0,
        help="windows agree when throughput differs by at most this",
    )
    p.add_argument(
        "--weights",
        help="Ultralytics .pt for the PyTorch baseline (default: the "
        "architecture built from yolo11n.yaml: speed does not depend on the weights)",
    )
    p.add_argument("--imgsz", type=int, default=None, help="defaults to the served spec's")
    p.add_argument("--no-perf-analyzer", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(args.repository, "yolo11").spec
    args.imgsz = args.imgsz or spec.imgsz
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.weights:
        try:
            from bonefrac.export._offline import prepare_ultralytics_offline

            prepare_ultralytics_offline()
            from ultralytics import YOLO

            args.weights = str(Path(tempfile.mkdtemp()) / "yolo11n.pt")
            YOLO("yolo11n.yaml", task="detect").save(args.weights)
        except ImportError:
            print("ultralytics is not installed: the PyTorch baseline is skipped", file=sys.stderr)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    result = run_suite(args)
    command = "python -m bonefrac.benchmarks.suite " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    path = write_results(
        result, out, command=command, started=started, elapsed_s=time.monotonic() - t0
    )
    print(f"wrote {path}")
    print(json.dumps(targets_table(result["runs"]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
