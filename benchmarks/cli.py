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
        default=60.0,
        help="unmeasured load first, while memory pools grow (default: 60)",
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
