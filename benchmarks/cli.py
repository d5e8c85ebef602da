"""``bonefrac soak``: a bounded soak run against a tritonserver this command starts."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "soak",
        help="saturate a served model for a while; errors and memory growth",
        description="Start tritonserver on the repository (loopback, free ports), run N "
        "closed-loop clients for --duration-s, and report requests, errors, "
        "throughput, memory of tritonserver + Python stubs after warm-up vs at the "
        "end, and shared-memory files left after shutdown.",
    )
    p.add_argument("--repository", default="model_repository", metavar="DIR")
    p.add_argument("--model", default="yolo11", help="ensemble (default: %(default)s)")
    p.add_argument("--images", required=True, metavar="DIR", help="X-rays to send")
    p.add_argument(
        "--duration-s", type=float, default=600.0, help="measured run time (default: 600)"
    )
    p.add_argument(
        "--warmup-s",
        type=float,
        default=120.0,
        help="unmeasured load first, while memory pools grow (default: 120)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="clients (default: 8)")
    p.add_argument("--json", metavar="OUT", help="write the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bonefrac.benchmarks.soak import SHM_GLOB, load_images, soak
    from bonefrac.errors import BonefracError
    from bonefrac.server import TritonServer

    server = TritonServer(
        args.repository,
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        model_control="explicit",
        load_models=[args.model],
    )
    try:
        server.start()
    except BonefracError as exc:
        print(f"bonefrac soak: {exc}", file=sys.stderr)
        return 1
    before = set(glob.glob(SHM_GLOB))
    try:
        result = soak(
            url=server.grpc_url,
            model=args.model,
            images=load_images(args.images),
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
    p = subparsers.add_parser(
        "bench",
        help="load-test a served model over gRPC (concurrency sweep or request rate)",
        description="Closed-loop concurrency sweep (or an open-loop request rate, constant or "
        "Poisson) against a Triton ensemble over gRPC, with warm-up, measurement "
        "windows repeated until stable, p50/p90/p95/p99 latency, throughput, "
        "errors, Triton's per-step server breakdown and the client's CPU use. "
        "--baseline in-process runs the same pipeline in this process for "
        "comparison. Writes JSON, CSV, PNG plots and a Markdown report.",
    )
    p.add_argument(
        "--server",
        default="127.0.0.1:8001",
        metavar="HOST:PORT[,HOST:PORT]",
        help="Triton gRPC address(es); several are balanced round robin, skipping "
        "unhealthy ones (loopback or your own test hosts for load) (default: %(default)s)",
    )
    p.add_argument("--model", default="yolo11", help="ensemble (default: %(default)s)")
    p.add_argument("--images", required=True, metavar="DIR", help="X-rays to send")
    p.add_argument(
        "--input",
        choices=("encoded", "tensors", "shm"),
        default="encoded",
        help="encoded: the image files' bytes to the ensemble; tensors: preprocessed float32 "
        "tensors straight to MODEL_detector over gRPC; shm: the same through system shared "
        "memory (client on the server's host) (default: %(default)s)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="images per request with --input tensors/shm (YOLO11 up to its max batch size)",
    )
    p.add_argument("--concurrency", default="1,2,4,8", help="sweep (default: %(default)s)")
    p.add_argument("--rate", metavar="R[,R]", help="open-loop request rates instead of a sweep")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals with --rate")
    p.add_argument("--duration-s", type=float, default=5.0, help="one measurement window")
    p.add_argument("--warmup-s", type=float, default=2.0, help="warm-up per step")
    p.add_argument("--max-windows", type=int, default=4, help="windows until stable (max)")
    p.add_argument(
        "--baseline",
        default="",
        help="comma list of in-process, fastapi, ultralytics (needs --weights), "
        "perf_analyzer (Triton's tool, fetched from the tritonclient 2.51.0 wheel); measured in "
        "the same run on the same images",
    )
    p.add_argument(
        "--weights",
        metavar="PATH.pt",
        help="Ultralytics checkpoint for the ultralytics baseline (needs the export extras)",
    )
    p.add_argument("--imgsz", type=int, default=640, help="image size of --weights")
    p.add_argument("--repository", default="model_repository", help="for --baseline in-process")
    p.add_argument(
        "--out",
        default="bench-out",
        metavar="DIR",
        help="folder for runs.json, runs.csv, plots and report.md",
    )
    p.add_argument(
        "--stability-pct",
        type=float,
        default=10.0,
        help="windows agree when throughput differs by at most this (default: 10)",
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import asyncio
    import shlex

    from bonefrac.benchmarks import loadgen, report
    from bonefrac.benchmarks.soak import load_images

    payloads = load_images(args.images, limit=64)
    if not payloads:
        print(f"bonefrac bench: no images in {args.images}", file=sys.stderr)
        return 2
    levels = (
        [("rate", float(r)) for r in args.rate.split(",")]
        if args.rate
        else [("concurrency", int(c)) for c in args.concurrency.split(",")]
    )
    baselines = [b.strip() for b in args.baseline.split(",") if b.strip()]
    unknown = set(baselines) - {"in-process", "fastapi", "ultralytics", "perf_analyzer"}
    if unknown:
        print(
            f"bonefrac bench: unknown baseline(s) {sorted(unknown)}; known: in-process, "
            "fastapi, ultralytics",
            file=sys.stderr,
        )
        return 2
    if "ultralytics" in baselines and not args.weights:
        print("bonefrac bench: the ultralytics baseline needs --weights PATH.pt", file=sys.stderr)
        return 2

    fastapi_server = None
    if "fastapi" in baselines:
        from bonefrac.benchmarks.fastapi_baseline import FastApiServer

        fastapi_server = FastApiServer(args.repository, args.model)

    if args.input != "encoded":
        if baselines:
            print("bonefrac bench: baselines take encoded images (drop --input)", file=sys.stderr)
            return 2
        from bonefrac.pipeline import read_repository_model

        spec = read_repository_model(args.repository, args.model).spec
        payloads = loadgen.detector_payloads(payloads, spec, batch=args.batch)

    async def main() -> list[dict]:
        runs = []
        if args.input == "encoded":
            target, stats, close = loadgen.triton_target(args.server, args.model)
        else:
            target, stats, close = loadgen.detector_target(
                args.server.split(",")[0], spec.detector, shared_memory=args.input == "shm"
            )
        targets = [("triton" if args.input == "encoded" else "triton-detector", target, stats)]
        closers = [close]
        if "in-process" in baselines:
            ceiling = loadgen.in_process_target(args.repository, args.model, workers=1)
            targets.append(("in-process", ceiling, None))
        if fastapi_server is not None:
            from bonefrac.benchmarks.fastapi_baseline import http_target

            http, http_close = http_target(fastapi_server.url)
            targets.append(("fastapi", http, None))
            closers.append(http_close)
        if "ultralytics" in baselines:
            eager = loadgen.ultralytics_target(args.weights, imgsz=args.imgsz)
            targets.append(("ultralytics", eager, None))
        try:
            for name, fn, st in targets:
                for kind, level in levels:
                    step = await loadgen.run_step(
                        fn,
                        payloads,
                        name=name,
                        warmup_s=args.warmup_s,
                        window_s=args.duration_s,
                        max_windows=args.max_windows,
                        stability=args.stability_pct / 100.0,
                        stats=st,
                        concurrency=level if kind == "concurrency" else None,
                        rate_rps=level if kind == "rate" else None,
                        poisson=args.poisson,
                    )
                    runs.append({**step.to_dict(), "input": args.input, "batch": args.batch})
                    print(
                        f"{name} {kind} {level}: {step.throughput_rps:.2f} req/s, p50 "
                        f"{step.p50_ms:.1f} ms, p99 {step.p99_ms:.1f} ms, errors {step.errors}, "
                        f"client CPU {step.client_cpu_pct} %",
                        flush=True,
                    )
        finally:
            for closer in closers:
                await closer()
        return runs

    try:
        runs = asyncio.run(main())
    finally:
        if fastapi_server is not None:
            fastapi_server.stop()
    if "perf_analyzer" in baselines:
        from bonefrac.benchmarks import perf_analyzer

        binary = perf_analyzer.locate() or perf_analyzer.install()
        for kind, level in levels:
            if kind != "concurrency":
                continue  # perf_analyzer's request-rate mode is not wired here
            row = perf_analyzer.run(
                binary,
                url=args.server.split(",")[0],
                model=args.model,
                images=payloads,
                concurrency=level,
                window_s=args.duration_s,
                stability_pct=int(args.stability_pct),
            )
            runs.append(row)
            print(
                f"perf_analyzer concurrency {level}: {row['throughput_rps']:.2f} req/s, p50 "
                f"{row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "bonefrac " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report.write_json(runs, out / "runs.json", command=command)
    report.write_csv(runs, out / "runs.csv")
    report.plot(runs, out)
    (out / "report.md").write_text(report.markdown(runs, command=command))
    print(f"wrote {out}/runs.json, runs.csv, report.md and plots")
    return 0 if all(r["errors"] == 0 for r in runs) else 1
