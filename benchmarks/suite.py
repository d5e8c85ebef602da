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


#: CPU profile variants tried by the tuning sweep (2 cores), each spelled out in full; the one
#: equal to the shipped :class:`~bonefrac.spec.BatchingSpec` is marked in the report.
_BATCH = {"max_batch_size": 8, "preferred_batch_sizes": (2, 4, 8), "max_queue_delay_us": 2000}
_NO_BATCH = {"max_batch_size": 1, "preferred_batch_sizes": (), "max_queue_delay_us": 0}


def _variant(instances: int, threads: int, spin: bool, **batching: Any) -> dict[str, Any]:
    return {
        "detector_instances": instances,
        "detector_threads": threads,
        "detector_spin": spin,
        **_BATCH,
        **batching,
    }


TUNING_VARIANTS: dict[str, dict[str, Any]] = {
    "1 detector x 2 threads, spin-wait, batch <= 8 within 2 ms": _variant(1, 2, True),
    "1 detector x 2 threads, spin-wait, no dynamic batching": _variant(1, 2, True, **_NO_BATCH),
    "2 detectors x 1 thread, batch <= 8 within 2 ms": _variant(2, 1, False),
    "2 detectors x 1 thread, no dynamic batching": _variant(2, 1, False, **_NO_BATCH),
    "2 detectors x 2 threads, spin-wait, batch <= 8 within 2 ms": _variant(2, 2, True),
    "2 detectors x 2 threads, batch <= 8 within 2 ms": _variant(2, 2, False),
    "2 detectors x 2 threads, batch <= 8, no delay": _variant(2, 2, False, max_queue_delay_us=0),
    "2 detectors x 2 threads, batch <= 4, no delay": _variant(
        2, 2, False, max_batch_size=4, preferred_batch_sizes=(2, 4), max_queue_delay_us=0
    ),
    "2 detectors x 2 threads, no dynamic batching": _variant(2, 2, False, **_NO_BATCH),
}


def shipped_variant(repository: Path, model: str = "yolo11") -> str | None:
    """The label of the variant that the repository's ensemble is configured with."""
    from bonefrac.pipeline import read_repository_model

    batching = read_repository_model(repository, model).spec.batching

    def same(value: Any, wanted: Any) -> bool:
        return tuple(value) == wanted if isinstance(wanted, tuple) else value == wanted

    for label, change in TUNING_VARIANTS.items():
        if all(same(getattr(batching, k), v) for k, v in change.items()):
            return label
    return None


def tuning_repository(repository: Path, model: str, out: Path, **batching: Any) -> Path:
    """A copy of one ensemble (and its steps) with its configs regenerated for other batching
    and instance settings; the ONNX file is linked, not copied."""
    import dataclasses
    import os

    from bonefrac.export.triton_config import model_configs, write_configs
    from bonefrac.pipeline import latest_version, read_repository_model

    spec = read_repository_model(repository, model).spec
    spec = dataclasses.replace(spec, batching=dataclasses.replace(spec.batching, **batching))
    for step in (spec.name, spec.preprocess, spec.detector, spec.postprocess):
        version = latest_version(repository / step)
        target = out / step / version.name
        target.mkdir(parents=True, exist_ok=True)
        for f in version.iterdir():
            os.symlink(f.resolve(), target / f.name)
    write_configs(model_configs(spec), out)
    return out


def run_tuning(args: argparse.Namespace, images: list[bytes], timing: dict) -> list[dict]:
    """The CPU profile sweep: the served YOLO11 ensemble under each of :data:`TUNING_VARIANTS`,
    one server at a time, at concurrency 1 and the sweep's highest."""
    from bonefrac.benchmarks import loadgen
    from bonefrac.server import TritonServer

    repo = Path(args.repository)
    sweep = [int(c) for c in args.concurrency.split(",")]
    levels = sorted({1, max(sweep)} | ({4} & set(sweep)))
    runs: list[dict] = []
    for label, change in TUNING_VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            variant = tuning_repository(repo, "yolo11", Path(tmp), **change)
            print(f"tuning: {label}", flush=True)
            with TritonServer(
                variant,
                grpc_port=0,
                http_port=0,
                metrics_port=0,
                model_control="explicit",
                load_models=["yolo11"],
                startup_timeout_s=300,
            ) as server:

                async def main(url: str = server.grpc_url, label: str = label) -> list[dict]:
                    target, stats, close = loadgen.triton_target(url, "yolo11")
                    try:
                        return await _sweep(
                            target,
                            images,
                            name="triton",
                            levels=levels,
                            stats=stats,
                            extra={"model": "yolo11", "variant": label},
                            **timing,
                        )
                    finally:
                        await close()

                runs.extend(asyncio.run(main()))
    return runs


async def run_detector_direct(
    url: str, repo: Path, images: list[bytes], timing: dict
) -> list[dict]:
    """Preprocessed tensors straight to the detectors: over gRPC vs through system shared
    memory, and the batch size of one request (YOLO11: 1 to 8 images; Faster R-CNN's graph takes
    one image per call)."""
    from bonefrac.benchmarks import loadgen
    from bonefrac.pipeline import read_repository_model

    runs: list[dict] = []
    for model in ("yolo11", "frcnn"):
        if not (repo / model).is_dir():
            continue
        spec = read_repository_model(repo, model).spec
        top = spec.batching.max_batch_size if model == "yolo11" else 1
        for batch in [b for b in (1, 2, 4, 8) if b <= top]:
            payloads = loadgen.detector_payloads(images[:16], spec, batch=batch)
            for shm in (False, True) if batch == 1 else (False,):
                target, stats, close = loadgen.detector_target(
                    url, spec.detector, shared_memory=shm
                )
                print(f"{spec.detector} tensors, batch {batch}, shm {shm}", flush=True)
                try:
                    runs.extend(
                        await _sweep(
                            target,
                            payloads,
                            name="triton-detector",
                            levels=[1, 4] if batch == 1 and model == "yolo11" else [1],
                            stats=stats,
                            extra={
                                "model": model,
                                "batch": batch,
                                "input": "shared memory" if shm else "gRPC",
                            },
                            **timing,
                        )
                    )
                finally:
                    await close()
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

        def cross_check() -> None:
            """perf_analyzer on the same server, model, images and levels, right after our
            own sweep of yolo11, so both see the server in the same state."""
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

        async def main() -> None:
            for model in models:
                target, stats, close = loadgen.triton_target(url, model)
                print(f"{model} over gRPC", flush=True)
                try:
                    # Unmeasured load first: the Python backend's shared-memory pools grow over
                    # the first few hundred requests (docs/RELIABILITY.md).
                    await loadgen.run_step(
                        target,
                        images,
                        name="warm-up",
                        concurrency=4,
                        warmup_s=args.warmup_s * 4,
                        window_s=1.0,
                        max_windows=1,
                    )
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
                if model == "yolo11" and not args.no_perf_analyzer:
                    cross_check()
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
            runs.extend(await run_detector_direct(url, repo, images, timing))

        fastapi = FastApiServer(str(repo), "yolo11")
        try:
            asyncio.run(main())
        finally:
            fastapi.stop()
        ap = int8_accuracy(url, models, args.data, limit=args.eval_limit) if args.data else {}
    if not args.no_tuning:
        runs.extend(run_tuning(args, images, timing))
    return {
        "runs": runs,
        "models": models,
        "ap50": ap,
        "shipped_variant": shipped_variant(repo),
    }


def int8_accuracy(
    url: str, models: list[str], data: str, *, limit: int | None = None
) -> dict[str, float]:
    """Valid AP50 (6class) of the FP32 and INT8 YOLO11 through the suite's server, with the
    project's evaluator (cached by model and data content, so a re-run costs nothing)."""
    from bonefrac.client.evaluate import default_cache_dir, evaluate, served_model

    out = {}
    for model in ("yolo11", "yolo11_int8"):
        if model in models:
            report = evaluate(
                served_model(url, model),
                data=data,
                protocol="6class",
                cache_dir=default_cache_dir(),
                progress=False,
                limit=limit,
            )
            out[model] = report["ap50"]
            print(f"  {model}: valid AP50 {report['ap50']:.4f}", flush=True)
    return out


def _main(r: dict) -> bool:
    """A row of the main comparison (not a scaling, tuning or detector-direct step)."""
    return not (r.get("image_side") or r.get("variant") or r.get("batch"))


def _best(runs, **match) -> dict | None:
    rows = [r for r in runs if all(r.get(k) == v for k, v in match.items()) and _main(r)]
    return max(rows, key=lambda r: r["throughput_rps"]) if rows else None


def _at(runs, c, **match) -> dict | None:
    rows = [
        r
        for r in runs
        if r.get("concurrency") == c and _main(r) and all(r.get(k) == v for k, v in match.items())
    ]
    return rows[0] if rows else None


def targets_table(runs: list[dict], ap: dict | None = None) -> list[tuple[str, str, str]]:
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
    if ap and "yolo11" in ap and "yolo11_int8" in ap:
        delta = ap["yolo11_int8"] - ap["yolo11"]
        rows.append(
            (
                "INT8 AP50 on valid within 0.01 of FP32",
                f"{ap['yolo11_int8']:.4f} vs {ap['yolo11']:.4f} ({delta:+.4f})",
                "met" if abs(delta) <= 0.01 else "not met",
            )
        )
    return rows


def tuning_table(runs: list[dict], shipped: str | None = None) -> list[str]:
    """Markdown lines: each CPU profile variant at concurrency 1 and at the highest level."""
    rows = [r for r in runs if r.get("variant")]
    if not rows:
        return []
    top = max(r["concurrency"] for r in rows)
    lines = [
        f"| variant | p50 ms at c1 | throughput/s at c{top} | p99 ms at c{top} | server queue + "
        f"infer ms (detector) at c{top} |",
        "| --- | --- | --- | --- | --- |",
    ]
    best = max((r for r in rows if r["concurrency"] == top), key=lambda r: r["throughput_rps"])
    for variant in dict.fromkeys(r["variant"] for r in rows):
        one = next((r for r in rows if r["variant"] == variant and r["concurrency"] == 1), {})
        hi = next((r for r in rows if r["variant"] == variant and r["concurrency"] == top), {})
        det = hi.get("server", {}).get("yolo11_detector", {})
        mark = " **(fastest)**" if hi is best else ""
        mark += " (shipped)" if variant == shipped else ""
        lines.append(
            f"| {variant}{mark} | {one.get('p50_ms', float('nan')):.1f} | "
            f"{hi.get('throughput_rps', float('nan')):.2f} | "
            f"{hi.get('p99_ms', float('nan')):.0f} | "
            f"{det.get('queue_ms', 0):.1f} + {det.get('compute_infer_ms', 0):.1f} |"
        )
    return lines


def write_results(
    result: dict,
    out: Path,
    *,
    command: str,
    started: str,
    elapsed_s: float,
    report_path: Path | None = None,
) -> Path:
    """``RESULTS.md`` (at ``report_path``, default ``out/RESULTS.md``) with JSON, CSV and plots
    in ``out``."""
    import os

    from bonefrac.benchmarks import report

    env = report.environment()
    runs = result["runs"]
    ap = result.get("ap50") or {}
    path = report_path or out / "RESULTS.md"
    rel = os.path.relpath(out, path.parent)
    lines = [
        "# Benchmark results",
        "",
        "Measured by `make bench` in one run on one machine; every ratio below compares numbers "
        "measured side by side in that run, on the same images: the valid split of the bone "
        "fracture X-ray dataset (Roboflow Universe, veda/bone-fracture-detection-daoon v4, "
        "CC BY 4.0).",
        "",
        f"- command: `{command}`",
        f"- date: {started} (took {elapsed_s / 60:.1f} min)",
        f"- machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
        f"{env['machine']['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "- method: closed-loop clients (asyncio gRPC), warm-up, then measurement windows until "
        "two agree within 10 % on throughput; percentiles over the measured requests; the "
        "server's own breakdown from Triton's statistics API; the client's CPU use per step.",
        "- targets: `triton` is the served ensemble over gRPC (encoded image bytes in, boxes "
        "out); `in-process` the same decode + letterbox + ONNX Runtime + NMS called by one "
        "thread in one process (the single-stream ceiling: the server beats it under load by "
        "running two detector sessions and the Python steps in parallel); `fastapi` a plain "
        "FastAPI + ONNX Runtime HTTP server with the same pipeline; `ultralytics` "
        "`YOLO(weights).predict()` in PyTorch; `perf_analyzer` Triton's own load generator on "
        "the same server, model and images.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets_table(runs, ap)]
    tuning = tuning_table(runs, result.get("shipped_variant"))
    if tuning:
        lines += [
            "",
            "## CPU profile tuning (YOLO11 ensemble, one server per variant)",
            "",
            *tuning,
        ]
    direct = [r for r in runs if r["target"] == "triton-detector"]
    if direct:
        lines += [
            "",
            "## Preprocessed tensors straight to the detector",
            "",
            "| model | input | batch | concurrency | requests/s | images/s | p50 ms | p99 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in direct:
            lines.append(
                f"| {r['model']} | {r['input']} | {r['batch']} | {r['concurrency']} | "
                f"{r['throughput_rps']:.2f} | {r['throughput_rps'] * r['batch']:.2f} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
            )
        lines += [
            "",
            "Faster R-CNN's exported graph takes one image per call (its output has a different "
            "number of boxes per image), so it has no batch-size axis.",
        ]
    sized = [r for r in runs if r.get("image_side")]
    if sized:
        lines += [
            "",
            "## Cost against image size (X-rays resized to the longer side, JPEG)",
            "",
            "| model | longer side px | concurrency | throughput/s | p50 ms | p99 ms | "
            "preprocess ms (server) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sized:
            pre = r.get("server", {}).get(f"{r['model']}_preprocess", {})
            lines.append(
                f"| {r['model']} | {r['image_side']} | {r['concurrency']} | "
                f"{r['throughput_rps']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{pre.get('compute_infer_ms', 0):.1f} |"
            )
    lines += [
        "",
        "## All steps",
        "",
        "| target | model | variant / input | image side | batch | concurrency | throughput/s | "
        "p50 ms | p90 ms | p99 ms | errors | client CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['target']} | {r.get('model', '')} | {r.get('variant') or r.get('input') or ''} "
            f"| {r.get('image_side') or 'as stored'} | {r.get('batch') or 1} | "
            f"{r['concurrency']} | {r['throughput_rps']:.2f} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r['client_cpu_pct'] if r['client_cpu_pct'] is not None else ''} |"
        )
    plots = report.plot([r for r in runs if _main(r)], out)
    plots += report.plot_scaling(runs, out)
    lines += ["", "Plots (next to the JSON and CSV of every step):", ""]
    lines += [f"![{p.stem}]({rel}/{p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
    report.write_json(runs, out / "runs.json", command=command)
    report.write_csv(runs, out / "runs.csv")
    return path


def _relative(arg: str) -> str:
    """An absolute path as seen from the working directory (no machine's paths in reports)."""
    import os

    return os.path.relpath(arg) if os.path.isabs(arg) and os.path.exists(arg) else arg


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
    p.add_argument("--window-s", type=float, default=5.0, help="one measurement window")
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
    p.add_argument("--no-tuning", action="store_true", help="skip the CPU profile sweep")
    p.add_argument("--out", default="benchmarks/results", help="JSON, CSV and plots")
    p.add_argument("--report", help="where RESULTS.md goes (default: OUT/RESULTS.md)")
    p.add_argument("--data", help="data.yaml: score FP32 vs INT8 AP50 on valid (bonefrac eval)")
    p.add_argument("--eval-limit", type=int, help="score only the first N valid images (smoke)")
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
        shlex.quote(_relative(a)) for a in (argv if argv is not None else sys.argv[1:])
    )
    path = write_results(
        result,
        out,
        command=command,
        started=started,
        elapsed_s=time.monotonic() - t0,
        report_path=Path(args.report) if args.report else None,
    )
    print(f"wrote {path}")
    print(json.dumps(targets_table(result["runs"], result.get("ap50")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
