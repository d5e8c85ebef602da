"""``bonefrac ui`` (the page against a running Triton) and ``bonefrac demo`` (Triton + page)."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = Path(__file__).parent / "examples"


def _ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address of the page (default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port of the page (default: %(default)s)")
    p.add_argument(
        "--data", metavar="DATA.yaml", help="dataset for the metrics tab's evaluation button"
    )
    p.add_argument(
        "--models", default="yolo11,frcnn", help="ensembles offered (default: %(default)s)"
    )
    p.add_argument("--max-upload-mb", type=int, default=50, help="upload limit (default: 50)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui",
        help="the Gradio demo page, calling a running Triton over gRPC",
        description="Serve the demo page: upload an X-ray (JPEG, PNG, DICOM), choose YOLO11, "
        "Faster R-CNN or both, see boxes, a table and a verdict. The page calls "
        "Triton over gRPC and loads no model. API endpoint: /detect.",
    )
    p.add_argument(
        "--server",
        default="127.0.0.1:8001",
        metavar="HOST:PORT[,HOST:PORT]",
        help="Triton gRPC address(es); several are balanced round robin, skipping "
        "unhealthy ones (loopback or your own test hosts for load) (default: %(default)s)",
    )
    _ui_args(p)
    p.set_defaults(func=run_ui)

    d = subparsers.add_parser(
        "demo",
        help="tritonserver and the page together, on 127.0.0.1",
        description="Start tritonserver on the model repository and the demo page against it; "
        "Ctrl-C stops both.",
    )
    d.add_argument(
        "--repository",
        default="model_repository",
        metavar="DIR",
        help="Triton model repository (default: %(default)s)",
    )
    d.add_argument("--grpc-port", type=int, default=8001, help="Triton gRPC port (default: 8001)")
    d.add_argument("--http-port", type=int, default=8000, help="Triton HTTP port (default: 8000)")
    d.add_argument("--metrics-port", type=int, default=8002, help="metrics port (default: 8002)")
    _ui_args(d)
    d.set_defaults(func=run_demo)


def _config(args: argparse.Namespace, server: str):
    from bonefrac.ui.app import UiConfig

    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    return UiConfig(
        server=server,
        models=models,
        data=args.data,
        examples=examples,
        max_upload_mb=args.max_upload_mb,
    )


def run_ui(args: argparse.Namespace) -> int:
    import os

    from bonefrac.ui.app import launch

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(
        f"bonefrac UI on http://{args.host}:{args.port} (Triton {args.server}); Ctrl-C stops it",
        flush=True,
    )
    launch(_config(args, args.server), host=args.host, port=args.port)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import os

    from bonefrac.cli import serve_until_stopped
    from bonefrac.server import TritonServer
    from bonefrac.ui.app import launch

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = TritonServer(
        args.repository,
        host="127.0.0.1",
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
    )

    def start_ui():
        demo = launch(_config(args, server.grpc_url), host=args.host, port=args.port, block=False)
        return demo.close, (f"  demo page http://{args.host}:{args.port}",)

    return serve_until_stopped(server, on_ready=start_ui, name="demo")
