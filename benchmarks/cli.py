"""``bonefrac soak`` and ``bonefrac bench``: load on served models, from the command line.

- ``bonefrac soak`` starts tritonserver on free loopback ports, saturates one model for a
  while and reports errors, memory growth and shared-memory files left after shutdown.
- ``bonefrac bench`` load-tests a running server over gRPC (a concurrency sweep or request
  rates) beside optional baselines (in-process, FastAPI, Ultralytics, Ultralytics' Triton
  client, torchvision, perf_analyzer) and writes JSON, CSV, plots and a Markdown report.

Both check every option before they start anything. An unstable measurement (windows that
never agreed, a perf_analyzer run without a stable pass) is a result, recorded as
``stable: false``; the exit code is 1 only when requests failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonefrac import _cli

#: What ``--baseline`` takes (in the order runs are made) and what each measures.
BASELINES = {
    "in-process": "the same pipeline in this process, no server",
    "fastapi": "the pipeline behind a FastAPI server on loopback",
    "ultralytics": "Ultralytics eager PyTorch on --weights (needs the export extras)",
    "ultralytics-triton": "Ultralytics' own Triton client, YOLO('grpc://SERVER/MODEL_detector'), "
    "one client thread: pre- and post-processing in the client (needs the export extras)",
    "torchvision": "torchvision's Faster R-CNN in PyTorch with the served model's weights "
    "(--model frcnn; needs the export extras)",
    "perf_analyzer": "Triton's own load tool, from the tritonclient 2.51.0 wheel",
}
#: What ``--input`` sends.
INPUTS = {
    "encoded": "the image files' bytes to the ensemble",
    "tensors": "preprocessed float32 batches of --batch images (up to the detector's max batch "
    "size) straight to MODEL_detector over gRPC",
    "shm": "the same through system shared memory (client on the server's host)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "soak", run)
    _cli.add_repository(p)
    _cli.add_model(p)
    _cli.add_images(p)
    p.add_argument("--duration-s", type=float, default=600.0, help="measured run time")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=120.0,
        help="unmeasured load first, while memory pools grow",
    )
    p.add_argument("--concurrency", type=int, default=8, help="clients")
    _cli.add_json(p, "write the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Saturate a served model for a while; errors and memory growth.

    Start tritonserver on the repository (loopback, free ports), run N closed-loop clients for
    --duration-s, and report requests, errors, throughput, memory of tritonserver + Python
    stubs after warm-up vs at the end, and shared-memory files left after shutdown.

    The soak run; exit code 1 when a request failed or shared memory was left behind.
    """
    from bonefrac.benchmarks.soak import SHM_GLOB, load_images, soak
    from bonefrac.server import TritonServer

    with _cli.usage_errors(FileNotFoundError):
        images = load_images(args.images)
    if not images:
        raise _cli.UsageError(f"no images in {args.images}")
    server = TritonServer.ephemeral(
        args.repository, model_control="explicit", load_models=[args.model]
    )
    server.start()
    before = set(glob.glob(SHM_GLOB))
    try:
        result = soak(
            url=server.grpc_url,
            model=args.model,
            images=images,
            server_pid=server.pid,
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            concurrency=args.concurrency,
        )
    finally:
        server.stop()
    leaked = sorted(set(glob.glob(SHM_GLOB)) - before)
    report = {**result.to_dict(), "shm_files_left_after_stop": len(leaked)}
    print(
        f"{result.requests} requests in {result.duration_s} s ({result.throughput_rps} req/s), "
        f"{result.errors} errors; memory {result.rss_after_warmup_mb} MB after warm-up -> "
        f"{result.rss_end_mb} MB at the end ({result.rss_growth_pct:+.2f} %); "
        f"shared-memory files left after stop: {len(leaked)}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if result.errors == 0 and not leaked else 1


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "bench", run_bench)
    _cli.add_server(p)
    _cli.add_model(p)
    p.add_argument(
        "--metrics-url",
        metavar="URL[,URL]",
        help="Triton's metrics endpoint of each --server, for the per-step breakdown of a "
        "one-model pipeline (default: HOST:8002/metrics for a server on port 8001)",
    )
    _cli.add_images(p)
    _add_bench_input(p)
    _add_bench_load(p)
    _add_bench_baselines(p)
    p.add_argument(
        "--out",
        default="bench-out",
        metavar="DIR",
        help="folder for runs.json, runs.csv, plots and report.md",
    )


def _add_bench_input(p: argparse.ArgumentParser) -> None:
    _cli.add_choice(p, "--input", INPUTS, default="encoded")
    p.add_argument(
        "--batch", type=int, default=1, help="images per request with --input tensors/shm"
    )


def _add_bench_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", default="1,2,4,8", metavar="N[,N]", help="sweep")
    p.add_argument("--rate", metavar="R[,R]", help="open-loop request rates instead of a sweep")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals with --rate")
    p.add_argument("--duration-s", type=float, default=5.0, help="one measurement window")
    p.add_argument("--warmup-s", type=float, default=2.0, help="warm-up per step")
    p.add_argument("--max-windows", type=int, default=4, help="windows until stable (max)")
    p.add_argument(
        "--stability-pct", type=float, default=10.0, help="stable: windows within this %%"
    )


def _add_bench_baselines(p: argparse.ArgumentParser) -> None:
    listed = "; ".join(f"{name}: {meaning}" for name, meaning in BASELINES.items())
    p.add_argument(
        "--baseline",
        default="",
        metavar="NAME[,NAME]",
        help=f"comma list, measured in the same run on the same images ({listed})",
    )
    p.add_argument("--weights", metavar="PATH.pt", help="checkpoint of the ultralytics baseline")
    p.add_argument("--imgsz", type=int, default=640, help="image size of --weights")
    _cli.add_repository(
        p, "model repository for --baseline in-process and fastapi and for --input tensors/shm"
    )


@dataclass
class BenchPlan:
    """What ``bonefrac bench`` will send, checked before anything starts.

    Attributes:
        payloads: encoded images, or preprocessed batches for ``--input tensors/shm``.
        levels: ``("concurrency", n)`` or ``("rate", requests per second)`` steps.
        baselines: names from :data:`BASELINES`.
        detector: the detector model ``--input tensors/shm`` calls, else None.
    """

    payloads: list[Any]
    levels: list[tuple[str, float]]
    baselines: list[str] = field(default_factory=list)
    detector: str | None = None


def plan_bench(args: argparse.Namespace) -> BenchPlan:
    """Check ``bonefrac bench``'s options and load its inputs; starts no process.

    Raises:
        UsageError: for options that do not fit together, unknown baselines, bad levels or no
            images.
    """
    from bonefrac.benchmarks.soak import load_images

    baselines = _cli.split_list(args.baseline)
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise _cli.UsageError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
    if "ultralytics" in baselines and not args.weights:
        raise _cli.UsageError("the ultralytics baseline needs --weights PATH.pt")
    if baselines and args.input != "encoded":
        raise _cli.UsageError("baselines take encoded images (drop --input)")
    if "torchvision" in baselines:
        from bonefrac.pipeline import read_repository_model
        from bonefrac.spec import FrcnnSpec

        if not isinstance(read_repository_model(args.repository, args.model).spec, FrcnnSpec):
            raise _cli.UsageError(
                f"the torchvision baseline runs Faster R-CNN models; {args.model} is not one "
                "(use --model frcnn)"
            )
    if "perf_analyzer" in baselines and args.rate:
        raise _cli.UsageError("the perf_analyzer baseline runs at --concurrency levels, not --rate")
    if args.rate:
        levels = [("rate", r) for r in _cli.parse_list(args.rate, float, option="--rate")]
    else:
        counts = _cli.parse_list(args.concurrency, int, option="--concurrency")
        levels = [("concurrency", c) for c in counts]
    if not levels:
        raise _cli.UsageError("give at least one --concurrency or --rate level")
    with _cli.usage_errors(FileNotFoundError):
        payloads = load_images(args.images, limit=64)
    if not payloads:
        raise _cli.UsageError(f"no images in {args.images}")
    plan = BenchPlan(payloads=payloads, levels=levels, baselines=baselines)
    if args.input != "encoded":
        from bonefrac.benchmarks import loadgen
        from bonefrac.pipeline import read_repository_model

        spec = read_repository_model(args.repository, args.model).spec
        plan.payloads = loadgen.detector_payloads(payloads, spec, batch=args.batch)
        plan.detector = spec.detector
    return plan


def run_bench(args: argparse.Namespace) -> int:
    """Load-test a served model over gRPC (concurrency sweep or request rate).

    Closed-loop concurrency sweep (or an open-loop request rate, constant or Poisson) against a
    Triton ensemble over gRPC, with warm-up, measurement windows repeated until stable,
    p50/p90/p95/p99 latency, throughput, errors, Triton's per-step server breakdown and the
    client's CPU use. --baseline in-process runs the same pipeline in this process for
    comparison. Writes JSON, CSV, PNG plots and a Markdown report. A measurement that never
    got stable is reported as such; the exit code is 1 only when requests failed (or a
    baseline could not run).
    """
    import asyncio

    plan = plan_bench(args)
    fastapi_server = None
    if "fastapi" in plan.baselines:
        from bonefrac.benchmarks.fastapi_baseline import FastApiServer

        try:
            fastapi_server = FastApiServer(args.repository, args.model)
        except RuntimeError as exc:
            raise _cli.CommandError(str(exc)) from exc
    try:
        runs = asyncio.run(_sweep(args, plan, fastapi_server))
    finally:
        if fastapi_server is not None:
            fastapi_server.stop()
    failure = None
    if "perf_analyzer" in plan.baselines:
        rows, failure = _perf_analyzer_runs(args, plan)
        runs += rows
    _write_report(args, runs)
    if failure is not None:
        raise _cli.CommandError(
            f"perf_analyzer failed (the other runs are in {args.out}): {failure}"
        )
    # Instability is reported in the runs (stable: false), never a failed command.
    return 1 if any(r.get("errors") for r in runs) else 0


def _targets(args: argparse.Namespace, plan: BenchPlan, fastapi_server, closers: list) -> list:
    """(name, target, server statistics or None) to measure; their closers go to ``closers``."""
    from bonefrac.benchmarks import loadgen

    if plan.detector is None:
        target, stats, close = loadgen.triton_target(
            args.server, args.model, metrics_url=args.metrics_url
        )
        targets = [("triton", target, stats)]
    else:
        shm = args.input == "shm"
        first = _cli.split_list(args.server)[0]
        target, stats, close = loadgen.detector_target(first, plan.detector, shared_memory=shm)
        targets = [("triton-detector", target, stats)]
    closers.append(close)
    if "in-process" in plan.baselines:
        ceiling = loadgen.in_process_target(args.repository, args.model, workers=1)
        targets.append(("in-process", ceiling, None))
    if fastapi_server is not None:
        from bonefrac.benchmarks.fastapi_baseline import http_target

        http, http_close = http_target(fastapi_server.url)
        targets.append(("fastapi", http, None))
        closers.append(http_close)
    if "ultralytics" in plan.baselines:
        eager = loadgen.ultralytics_target(args.weights, imgsz=args.imgsz)
        targets.append(("ultralytics", eager, None))
    if "ultralytics-triton" in plan.baselines:
        from bonefrac.pipeline import read_repository_model

        spec = read_repository_model(args.repository, args.model).spec
        guide = loadgen.ultralytics_triton_target(
            _cli.split_list(args.server)[0],
            spec.detector,
            conf=spec.conf_threshold,
            iou=spec.iou_threshold,
        )
        targets.append(("ultralytics-triton", guide, None))
    if "torchvision" in plan.baselines:
        from bonefrac.benchmarks.torch_baseline import torchvision_target

        targets.append(("torchvision", torchvision_target(args.repository, args.model), None))
    return targets


async def _sweep(args: argparse.Namespace, plan: BenchPlan, fastapi_server) -> list[dict]:
    """Every target at every level with bonefrac's load generator."""
    from bonefrac.benchmarks import loadgen

    runs: list[dict] = []
    closers: list = []
    try:
        for name, fn, stats in _targets(args, plan, fastapi_server, closers):
            for kind, level in plan.levels:
                step = await loadgen.run_step(
                    fn,
                    plan.payloads,
                    name=name,
                    warmup_s=args.warmup_s,
                    window_s=args.duration_s,
                    max_windows=args.max_windows,
                    stability=args.stability_pct / 100.0,
                    stats=stats,
                    concurrency=level if kind == "concurrency" else None,
                    rate_rps=level if kind == "rate" else None,
                    poisson=args.poisson,
                )
                runs.append({**step.to_dict(), "input": args.input, "batch": args.batch})
                print(step_line(runs[-1], kind, level), flush=True)
    finally:
        for closer in closers:
            await closer()
    return runs


def _perf_analyzer_runs(args: argparse.Namespace, plan: BenchPlan) -> tuple[list[dict], str | None]:
    """perf_analyzer at each concurrency level, and why it stopped early (None: it did not).
    A failure does not lose the runs already measured: they are still written."""
    from bonefrac.benchmarks import perf_analyzer

    rows: list[dict] = []
    try:
        binary = perf_analyzer.locate() or perf_analyzer.install()
        for _, level in plan.levels:
            row = perf_analyzer.run(
                binary,
                url=_cli.split_list(args.server)[0],
                model=args.model,
                images=plan.payloads,
                concurrency=level,
                window_s=args.duration_s,
                stability_pct=int(args.stability_pct),
            )
            rows.append(row)
            print(step_line(row, "concurrency", level), flush=True)
    except RuntimeError as exc:
        return rows, str(exc)
    return rows, None


def step_line(row: dict[str, Any], kind: str, level: float) -> str:
    """One line of a run: throughput, p50 and p99 (``n/a`` where the tool gave none), errors
    and client CPU where measured, and whether the measurement was unstable."""

    def num(value: Any, spec: str = ".1f") -> str:
        return "n/a" if value is None or value != value else format(value, spec)

    text = (
        f"{row['target']} {kind} {level}: {num(row['throughput_rps'], '.2f')} req/s, "
        f"p50 {num(row['p50_ms'])} ms, p99 {num(row['p99_ms'])} ms"
    )
    if row.get("client_cpu_pct") is not None:
        text += f", errors {row['errors']}, client CPU {row['client_cpu_pct']} %"
    if row.get("stable") is False:
        text += " (unstable)"
    return text


def _write_report(args: argparse.Namespace, runs: list[dict]) -> None:
    """runs.json, runs.csv, the plots and report.md into --out."""
    import shlex

    from bonefrac.benchmarks import report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "bonefrac " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report.write_json(runs, out / "runs.json", command=command)
    report.write_csv(runs, out / "runs.csv")
    report.plot(runs, out)
    (out / "report.md").write_text(report.markdown(runs, command=command))
    print(f"wrote {out}/runs.json, runs.csv, report.md and plots")
