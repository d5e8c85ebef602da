"""The ``bonefrac`` command."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bonefrac import __version__


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run tritonserver on the model repository",
        description="Run a real tritonserver (from the nvidia-pytriton wheel) on a model "
        "repository, bound to 127.0.0.1 unless --host says otherwise. Installs the "
        "Python backend stub for this Python, waits for readiness and prints the "
        "addresses; Ctrl-C stops it.",
    )
    p.add_argument(
        "--repository",
        default="model_repository",
        metavar="DIR",
        help="Triton model repository (default: %(default)s)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8002,
        help="Prometheus metrics port (default: %(default)s)",
    )
    p.add_argument(
        "--startup-timeout-s",
        type=float,
        default=120.0,
        metavar="S",
        help="how long to wait for readiness (default: %(default)s)",
    )
    p.add_argument("--log-file", metavar="PATH", help="server log (default: a temporary file)")
    p.add_argument("--grpc-tls-cert", metavar="PEM", help="serve gRPC over TLS with this cert")
    p.add_argument("--grpc-tls-key", metavar="PEM", help="private key of --grpc-tls-cert")
    p.add_argument(
        "--grpc-tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    p.set_defaults(func=_run_serve)


def serve_until_stopped(server, *, on_ready=None, name: str = "serve") -> int:
    """Start ``server``, print its addresses, run ``on_ready()`` (which may start more, e.g. the
    UI, and return a closer and lines to print), and stop everything on SIGINT/SIGTERM."""
    from bonefrac.errors import BonefracError

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except BonefracError as exc:
        print(f"bonefrac {name}: {exc}", file=sys.stderr)
        return 1
    close, lines = None, ()
    try:
        if on_ready is not None:
            close, lines = on_ready()
        print(f"tritonserver ready (pid {server.pid})", flush=True)
        print(f"  gRPC     {server.grpc_url}", flush=True)
        print(f"  HTTP     {server.http_url}", flush=True)
        print(f"  metrics  {server.metrics_url}", flush=True)
        print(f"  log      {server.log_path}", flush=True)
        for line in lines:
            print(line, flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                print(
                    f"bonefrac {name}: tritonserver exited; log: {server.log_path}", file=sys.stderr
                )
                return 1
    finally:
        if close is not None:
            close()
        print("stopping tritonserver ...", flush=True)
        code = server.stop()
        print(f"tritonserver stopped (exit code {code})", flush=True)
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from bonefrac.server import TritonServer

    server = TritonServer(
        args.repository,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        startup_timeout_s=args.startup_timeout_s,
        log_path=args.log_file,
    )
    return serve_until_stopped(server)


def build_parser() -> argparse.ArgumentParser:
    from bonefrac import dataset_cli
    from bonefrac.benchmarks import cli as bench_cli
    from bonefrac.client import cli as infer_cli
    from bonefrac.client import evaluate_cli
    from bonefrac.export import cli as export_cli
    from bonefrac.train import cli as train_cli
    from bonefrac.ui import cli as ui_cli

    parser = argparse.ArgumentParser(
        prog="bonefrac",
        description="Bone-fracture detection on X-rays, served by NVIDIA Triton Inference Server.",
        epilog="Run 'bonefrac COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"bonefrac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(sub)
    infer_cli.add_parser(sub)
    export_cli.add_parser(sub)
    train_cli.add_parser(sub)
    evaluate_cli.add_parser(sub)
    dataset_cli.add_parser(sub)
    ui_cli.add_parser(sub)
    bench_cli.add_parser(sub)
    bench_cli.add_bench_parser(sub)
    return parser


#: Optional modules (each the name of its distribution too) and the extra (pyproject.toml) that
#: installs each; the benchmark commands name their own extra for any of them.
EXTRA_OF_MODULE = {
    "gradio": "ui",
    "pycocotools": "eval",
    "matplotlib": "eval",
    "pydicom": "dicom",
    "fastapi": "bench",
    "uvicorn": "bench",
    "aiohttp": "bench",
    "psutil": "bench",
    "torch": "export",
    "torchvision": "export",
    "ultralytics": "export",
    "onnx": "export",
    "onnxslim": "export",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:  # an extra that is not installed: say which
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        if args.command in ("bench", "soak"):
            extra = "bench"
        print(
            f"bonefrac {args.command}: {exc}: this command needs the [{extra}] extra: "
            f"pip install 'bonefrac[{extra}]'",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
