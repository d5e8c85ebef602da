"""The whole benchmark (``make bench``): every comparison of ``benchmarks/RESULTS.md`` measured side
by side in one run on this machine, and the report written from what was measured.

Starts its own tritonserver on loopback (free ports) with the repository's models, then:
served YOLO11 vs the in-process ceiling (one stream, and several sessions on several threads), a
FastAPI + ONNX Runtime server, Ultralytics' Triton-guide layout (its client against the served
detector), Ultralytics predict and perf_analyzer over a concurrency sweep; INT8 vs FP32; Faster
R-CNN, and torchvision's model in PyTorch with the same weights; and cost against image size
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
from dataclasses import dataclass
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
    server_pid: int | None = None,
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
            server_pid=server_pid,
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


#: Batches up to 4 (preferred 2 and 4), no queue delay.
_BATCH4 = {"max_batch_size": 4, "preferred_batch_sizes": (2, 4), "max_queue_delay_us": 0}


def _variant(
    instances: int,
    threads: int,
    spin: bool,
    *,
    layout: str = "ensemble",
    solo: int = 0,
    **batching: Any,
) -> dict[str, Any]:
    return {
        "cpu_layout": layout,
        "detector_instances": instances,
        "detector_threads": threads,
        "detector_spin": spin,
        "detector_solo_threads": solo,
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
    "one model: 2 instances x 1 thread, batch <= 4, no delay": _variant(
        2, 1, False, layout="single", **_BATCH4
    ),
    "one model: 2 instances x 1 thread, 2 when alone, batch <= 4, no delay": _variant(
        2, 1, False, layout="single", solo=2, **_BATCH4
    ),
    "one model: 2 instances x 1 thread, 2 when alone, batch <= 4 preferring 2, no delay": (
        _variant(2, 1, False, layout="single", solo=2, **{**_BATCH4, "preferred_batch_sizes": (2,)})
    ),
    "one model: 1 instance x 2 threads, batch <= 4, no delay": _variant(
        1, 2, False, layout="single", **_BATCH4
    ),
    "one model: 2 instances x 2 threads, batch <= 4, no delay": _variant(
        2, 2, False, layout="single", **_BATCH4
    ),
}


def shipped_variant(repository: Path, model: str = "yolo11") -> str | None:
    """The label of the variant that the repository's model is configured with."""
    from bonefrac.pipeline import read_repository_model

    batching = read_repository_model(repository, model).spec.batching

    def same(value: Any, wanted: Any) -> bool:
        return tuple(value) == wanted if isinstance(wanted, tuple) else value == wanted

    for label, change in TUNING_VARIANTS.items():
        if all(same(getattr(batching, k), v) for k, v in change.items()):
            return label
    return None


def tuning_repository(repository: Path, model: str, out: Path, **batching: Any) -> Path:
    """A copy of one model (and its step models) with its configs regenerated for other
    batching, instance and layout settings (``batching``: :class:`~bonefrac.spec.BatchingSpec`
    fields, e.g. ``cpu_layout``); the ONNX file is linked, not copied."""
    import dataclasses
    import os

    from bonefrac.export.repository import write_repository
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    spec = found.spec
    spec = dataclasses.replace(spec, batching=dataclasses.replace(spec.batching, **batching))
    onnx = out / spec.detector / found.onnx_path.parent.name / spec.onnx_file
    onnx.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(found.onnx_path.resolve(), onnx)
    write_repository(spec, onnx, out, replace=True)
    return out


@dataclass
class Bench:
    """What every section of the suite measures with: the server, the images, the levels."""

    url: str
    repo: Path
    models: list[str]
    images: list[bytes]
    levels: list[int]
    timing: dict[str, float]
    #: tritonserver's process: its CPU time (stubs included) per request is recorded
    server_pid: int | None = None

    async def sweep(
        self,
        target,
        name: str,
        levels=None,
        stats=None,
        *,
        images=None,
        server_pid: int | None = None,
        **extra: Any,
    ) -> list[dict]:
        """``target`` at each level (default: the sweep's) on ``images`` (default: the
        suite's), counting the CPU time of the server process ``server_pid`` if given;
        ``extra`` is added to each step's row."""
        return await _sweep(
            target,
            images or self.images,
            name=name,
            levels=levels or self.levels,
            stats=stats,
            extra=extra,
            server_pid=server_pid,
            **self.timing,
        )

    async def triton(self, model: str, levels=None, *, images=None, **extra: Any) -> list[dict]:
        """A served ensemble over gRPC (its own connection), as :meth:`sweep`."""
        from bonefrac.benchmarks import loadgen

        target, stats, close = loadgen.triton_target(self.url, model)
        try:
            return await self.sweep(
                target,
                "triton",
                levels,
                stats,
                images=images,
                server_pid=self.server_pid,
                model=model,
                **extra,
            )
        finally:
            await close()


def run_tuning(args: argparse.Namespace, images: list[bytes], timing: dict) -> list[dict]:
    """The CPU profile sweep: the served YOLO11 ensemble under each of :data:`TUNING_VARIANTS`,
    one server at a time, at concurrency 1 and the sweep's highest."""

    repo = Path(args.repository)
    sweep = [int(c) for c in args.concurrency.split(",")]
    levels = sorted({1, max(sweep)} | ({4} & set(sweep)))
    runs: list[dict] = []
    for label, change in TUNING_VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            variant = tuning_repository(repo, "yolo11", Path(tmp), **change)
            print(f"tuning: {label}", flush=True)
            server = _started(variant, ["yolo11"])
            try:
                bench = Bench(
                    server.grpc_url, variant, ["yolo11"], images, levels, timing, server.pid
                )
                runs += asyncio.run(bench.triton("yolo11", variant=label))
            finally:
                server.stop()
    return runs


def _started(repository: Path, models: list[str]) -> Any:
    """A tritonserver on free loopback ports with ``models`` loaded, started; started once more
    if it crashed during start-up (on a saturated machine a Python-backend stub can miss its
    start-up handshake and abort the server: not something the benchmark measures)."""
    from bonefrac.errors import ServerError
    from bonefrac.server import TritonServer

    server = TritonServer.ephemeral(
        repository, model_control="explicit", load_models=models, startup_timeout_s=300
    )
    try:
        return server.start()
    except ServerError as exc:
        if "during start-up" not in str(exc):
            raise
        print(f"  tritonserver crashed while starting, once more: {exc}", flush=True)
        return server.start()


async def run_detector_direct(bench: Bench) -> list[dict]:
    """Preprocessed tensors straight to the detectors: over gRPC vs through system shared
    memory, and the batch size of one request (YOLO11: 1 to 8 images; Faster R-CNN's graph takes
    one image per call)."""
    from bonefrac.pipeline import read_repository_model

    runs: list[dict] = []
    for model in ("yolo11", "frcnn"):
        if not (bench.repo / model).is_dir():
            continue
        spec = read_repository_model(bench.repo, model).spec
        top = spec.batching.max_batch_size if model == "yolo11" else 1
        for batch in [b for b in (1, 2, 4, 8) if b <= top]:
            for shm in (False, True) if batch == 1 else (False,):
                runs += await _detector_steps(bench, spec, model, batch, shm)
    return runs


async def _detector_steps(bench: Bench, spec, model: str, batch: int, shm: bool) -> list[dict]:
    """One detector with ``batch`` images per request, over gRPC or shared memory (YOLO11 at
    batch 1: concurrency 1 and 4; the others at 1)."""
    from bonefrac.benchmarks import loadgen

    payloads = loadgen.detector_payloads(bench.images[:16], spec, batch=batch)
    target, stats, close = loadgen.detector_target(bench.url, spec.detector, shared_memory=shm)
    print(f"{spec.detector} tensors, batch {batch}, shm {shm}", flush=True)
    try:
        return await bench.sweep(
            target,
            "triton-detector",
            [1, 4] if batch == 1 and model == "yolo11" else [1],
            stats,
            images=payloads,
            model=model,
            batch=batch,
            input="shared memory" if shm else "gRPC",
        )
    finally:
        await close()


async def _served(bench: Bench, model: str, warmup_s: float) -> list[dict]:
    """One ensemble over gRPC over the sweep (Faster R-CNN up to concurrency 4), after an
    unmeasured load: the Python backend's shared-memory pools grow over the first few hundred
    requests (docs/RELIABILITY.md)."""
    from bonefrac.benchmarks import loadgen

    print(f"{model} over gRPC", flush=True)
    target, _, close = loadgen.triton_target(bench.url, model)
    try:
        await loadgen.run_step(
            target,
            bench.images,
            name="warm-up",
            concurrency=4,
            warmup_s=warmup_s * 4,
            window_s=1.0,
            max_windows=1,
        )
    finally:
        await close()
    return await bench.triton(
        model, bench.levels if model != "frcnn" else [c for c in bench.levels if c <= 4]
    )


def _cross_check(bench: Bench, window_s: float, stability_pct: float) -> list[dict]:
    """perf_analyzer on the same server, model, images and levels, right after our own sweep
    of yolo11, so both see the server in the same state."""
    from bonefrac.benchmarks import perf_analyzer

    binary = perf_analyzer.locate() or perf_analyzer.install()
    print("perf_analyzer", flush=True)
    rows = []
    for c in bench.levels:
        row = perf_analyzer.run(
            binary,
            url=bench.url,
            model="yolo11",
            images=bench.images,
            concurrency=c,
            window_s=window_s,
            stability_pct=int(stability_pct),
        )
        rows.append({**row, "model": "yolo11"})
        stable = "" if row["stable"] else " (no stable window: the last trial)"
        print(f"  perf_analyzer c{c}: {row['throughput_rps']:.2f}/s{stable}", flush=True)
    return rows


#: In-process layouts tried for the ceiling beside one stream: (pipelines, ONNX Runtime
#: intra-op threads each), each pipeline its own session on its own thread; run at the sweep's
#: highest concurrency, the best of all is the ceiling.
IN_PROCESS_LAYOUTS = ((2, 1), (3, 1), (2, 2))


def _sessions(sessions: int, threads: int) -> str:
    return f"{sessions} session{'s' * (sessions > 1)} x {threads} thread{'s' * (threads > 1)}"


async def _in_process(bench: Bench) -> list[dict]:
    """The in-process ceiling: one stream (one pipeline on one thread, ONNX Runtime on every
    core) over the sweep, then each of :data:`IN_PROCESS_LAYOUTS` at the highest level."""
    from bonefrac.benchmarks import loadgen

    print("in-process: one stream", flush=True)
    one = loadgen.in_process_target(str(bench.repo), "yolo11")
    runs = await bench.sweep(one, "in-process", model="yolo11", layout="one stream")
    for sessions, threads in IN_PROCESS_LAYOUTS:
        layout = _sessions(sessions, threads)
        print(f"in-process: {layout}", flush=True)
        target = loadgen.in_process_target(
            str(bench.repo), "yolo11", sessions=sessions, threads=threads
        )
        runs += await bench.sweep(
            target, "in-process", [max(bench.levels)], model="yolo11", layout=layout
        )
    return runs


async def _ultralytics_guide(bench: Bench) -> list[dict]:
    """Ultralytics' Triton guide: ``YOLO("grpc://...")`` against the served detector, pre- and
    post-processing in the client; one client thread at concurrency 1 and 4, four threads (one
    YOLO object each) at 4."""
    from bonefrac.benchmarks import loadgen
    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(bench.repo, "yolo11").spec
    runs: list[dict] = []
    for threads, levels in ((1, [1, 4]), (4, [4])):
        layout = f"{threads} client thread{'s' * (threads > 1)}"
        print(f"Ultralytics' Triton client: {layout}", flush=True)
        target = loadgen.ultralytics_triton_target(
            bench.url,
            spec.detector,
            threads=threads,
            conf=spec.conf_threshold,
            iou=spec.iou_threshold,
        )
        runs += await bench.sweep(
            target,
            "ultralytics-triton",
            levels,
            server_pid=bench.server_pid,
            model="yolo11",
            layout=layout,
        )
    return runs


async def _torchvision(bench: Bench) -> list[dict]:
    """Faster R-CNN in PyTorch with the served weights (what a user would run without
    bonefrac): one thread at concurrency 1, two threads at 2 and 4."""
    from bonefrac.benchmarks.torch_baseline import frcnn_from_onnx, torchvision_target
    from bonefrac.export._common import ExportError

    try:
        model = frcnn_from_onnx(bench.repo, "frcnn")
    except ExportError as exc:
        print(f"  skipped: the served weights do not load into PyTorch: {exc}", flush=True)
        return []
    runs: list[dict] = []
    for threads, levels in ((1, [1]), (2, [2, 4])):
        layout = f"{threads} thread{'s' * (threads > 1)}"
        print(f"torchvision Faster R-CNN (PyTorch): {layout}", flush=True)
        target = torchvision_target(str(bench.repo), "frcnn", threads=threads, torch_model=model)
        runs += await bench.sweep(target, "torchvision", levels, model="frcnn", layout=layout)
    return runs


async def _baselines(bench: Bench, fastapi: Any, weights: str | None, imgsz: int) -> list:
    """The in-process ceiling, the FastAPI + ONNX Runtime server, Ultralytics' Triton-guide
    layout, Ultralytics predict and torchvision's Faster R-CNN in PyTorch."""
    from bonefrac.benchmarks import loadgen
    from bonefrac.benchmarks.fastapi_baseline import http_target

    runs = await _in_process(bench)
    target, close = http_target(fastapi.url)
    print("FastAPI + ONNX Runtime", flush=True)
    try:
        runs += await bench.sweep(target, "fastapi", server_pid=fastapi.process.pid, model="yolo11")
    finally:
        await close()
    if weights:
        runs += await _ultralytics_guide(bench)
        print("Ultralytics predict (PyTorch)", flush=True)
        eager = loadgen.ultralytics_target(weights, imgsz=imgsz)
        runs += await bench.sweep(
            eager, "ultralytics", [c for c in bench.levels if c <= 4], model="yolo11"
        )
    if "frcnn" in bench.models and _has_torch():
        runs += await _torchvision(bench)
    return runs


def _has_torch() -> bool:
    import importlib.util

    found = all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "onnx"))
    if not found:
        print("torch/torchvision/onnx missing: the PyTorch Faster R-CNN is skipped", flush=True)
    return found


async def _image_sizes(bench: Bench, sides: list[int]) -> list[dict]:
    """Each served model (not INT8) at concurrency 4 on the images resized to each side."""
    runs: list[dict] = []
    for side in sides:
        scaled = _resized_copies(bench.images[:8], side)
        for model in [m for m in bench.models if m != "yolo11_int8"]:
            runs += await bench.triton(model, [4], images=scaled, image_side=side)
    return runs


async def _on_one_server(bench: Bench, args: argparse.Namespace, fastapi: Any) -> list:
    """Every section that runs against the suite's server, in the report's order."""
    runs: list[dict] = []
    for model in bench.models:
        runs += await _served(bench, model, args.warmup_s)
        if model == "yolo11" and not args.no_perf_analyzer:
            runs += _cross_check(bench, args.window_s, args.stability_pct)
    runs += await _baselines(bench, fastapi, args.weights, args.imgsz)
    runs += await _image_sizes(bench, args.sizes)
    runs += await run_detector_direct(bench)
    return runs


def _detectors(repo: Path, models: list[str]) -> list[str]:
    """Each model's detector step, loaded by name: Ultralytics' Triton client and the tensor
    steps call it, and a one-model layout does not load its step models with it."""
    from bonefrac.pipeline import read_repository_model

    return [read_repository_model(repo, m).spec.detector for m in models]


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every section; returns the record's facts: ``runs`` (every step), ``models``,
    ``ap50`` (FP32 and INT8 YOLO11 and Faster R-CNN on valid, with ``ap50_source``) and
    ``shipped_variant``."""
    from bonefrac.benchmarks.fastapi_baseline import FastApiServer
    from bonefrac.benchmarks.soak import load_images

    repo = Path(args.repository)
    models = [m for m in ("yolo11", "yolo11_int8", "frcnn") if (repo / m).is_dir()]
    timing = dict(
        window_s=args.window_s,
        warmup_s=args.warmup_s,
        max_windows=args.max_windows,
        stability=args.stability_pct / 100.0,
    )
    server = _started(repo, models + _detectors(repo, models))
    try:
        bench = Bench(
            url=server.grpc_url,
            repo=repo,
            models=models,
            images=load_images(args.images, limit=32),
            levels=[int(c) for c in args.concurrency.split(",")],
            timing=timing,
            server_pid=server.pid,
        )
        fastapi = FastApiServer(str(repo), "yolo11")
        try:
            runs = asyncio.run(_on_one_server(bench, args, fastapi))
        finally:
            fastapi.stop()
        ap = (
            valid_accuracy(server.grpc_url, models, args.data, limit=args.eval_limit)
            if args.data
            else {}
        )
    finally:
        server.stop()
    if not args.no_tuning:
        runs += run_tuning(args, bench.images, timing)
    return {"models": models, **ap, "shipped_variant": shipped_variant(repo), "runs": runs}


def valid_accuracy(
    url: str, models: list[str], data: str, *, limit: int | None = None
) -> dict[str, Any]:
    """Valid AP50 (6class) of the FP32 and INT8 YOLO11 and of Faster R-CNN through the suite's
    server, with the project's evaluator (cached by model and data content, so a re-run costs
    nothing): the record's ``ap50`` and ``ap50_source``."""
    from bonefrac.client.evaluate import default_cache_dir, evaluate, served_model

    ap50 = {}
    for model in ("yolo11", "yolo11_int8", "frcnn"):
        if model in models:
            report = evaluate(
                served_model(url, model),
                data=data,
                protocol="6class",
                cache_dir=default_cache_dir(),
                progress=False,
                limit=limit,
            )
            ap50[model] = report["ap50"]
            print(f"  {model}: valid AP50 {report['ap50']:.4f}", flush=True)
    images = f"the first {limit} images" if limit else "every image"
    source = f"bonefrac eval through the suite's server, valid split ({images}), 6class protocol"
    return {"ap50": ap50, "ap50_source": source}


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
    from bonefrac.benchmarks import report
    from bonefrac.benchmarks.targets import verdicts
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
    record = {
        "command": command,
        **report.environment(),
        "started": started,
        "elapsed_s": round(time.monotonic() - t0, 1),
        **result,
    }
    path = report.write_results(record, out, report_path=Path(args.report) if args.report else None)
    print(f"wrote {path}")
    print(json.dumps(verdicts(result["runs"], result.get("ap50")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
