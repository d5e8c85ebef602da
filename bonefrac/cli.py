"""The ``bonefrac`` command: ``get_args_parser()`` builds it, :func:`main` runs one subcommand
inside the shared error boundary (:func:`bonefrac._cli.run`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bonefrac import __version__, _cli


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "serve", _run_serve)
    _cli.add_repository(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    _cli.add_ports(p)
    p.add_argument(
        "--startup-timeout-s",
        type=float,
        default=120.0,
        metavar="S",
        help="how long to wait for readiness",
    )
    p.add_argument("--log-file", metavar="PATH", help="server log (default: a temporary file)")
    p.add_argument("--grpc-tls-cert", metavar="PEM", help="serve gRPC over TLS with this cert")
    p.add_argument("--grpc-tls-key", metavar="PEM", help="private key of --grpc-tls-cert")
    p.add_argument(
        "--grpc-tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )


def serve_until_stopped(server, *, on_ready=None, name: str = "serve") -> int:
    """Start ``server``, print its addresses, run ``on_ready()`` (which may start more, e.g. the
    UI, and return a closer and lines to print), and stop everything on SIGINT/SIGTERM.

    Raises:
        bonefrac.errors.ServerError: when the server does not start (nothing is left running).
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    close, lines = None, ()
    try:
        if on_ready is not None:
            close, lines = on_ready()
        print(f"tritonserver ready (pid {server.pid})", flush=True)
        for label, value in (
            ("gRPC", server.grpc_url),
            ("HTTP", server.http_url),
            ("metrics", server.metrics_url),
            ("log", server.log_path),
        ):
            print(f"  {label:<8} {value}", flush=True)
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


def _tls(args: argparse.Namespace):
    """The gRPC TLS the serve options ask for, or None.

    Raises:
        UsageError: for a certificate without its key or the other way round.
        ServerError: for a file that does not exist.
    """
    from bonefrac.server import GrpcTls

    if not (args.grpc_tls_cert or args.grpc_tls_key or args.grpc_tls_client_ca):
        return None
    if not (args.grpc_tls_cert and args.grpc_tls_key):
        raise _cli.UsageError("gRPC TLS needs both --grpc-tls-cert and --grpc-tls-key")
    tls = GrpcTls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca)
    tls.args()  # raises ServerError for a file that is not there, before anything starts
    return tls


def _run_serve(args: argparse.Namespace) -> int:
    """Run tritonserver on the model repository.

    Run a real tritonserver (from the nvidia-pytriton wheel) on a model repository, bound to
    127.0.0.1 unless --host says otherwise. Installs the Python backend stub for this
    Python, waits for readiness and prints the addresses; Ctrl-C stops it.
    """
    server = _cli.server_from_args(
        args,
        host=args.host,
        startup_timeout_s=args.startup_timeout_s,
        log_path=args.log_file,
        tls=_tls(args),
    )
    return serve_until_stopped(server)


def get_args_parser() -> argparse.ArgumentParser:
    """The ``bonefrac`` parser with every subcommand."""
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


#: The name other modules and tests know the parser by.
build_parser = get_args_parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (the process's arguments when None) and run the command.

    Returns:
        Its exit code: 0 on success, 1 when it failed (one line on stderr says why), 2 for
        options that do not fit together.
    """
    return _cli.run(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
