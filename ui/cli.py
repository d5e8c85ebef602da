"""``bonefrac ui`` (the page against a running Triton) and ``bonefrac demo`` (Triton + page)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bonefrac import _cli

EXAMPLES = Path(__file__).parent / "examples"


def _add_page(p: argparse.ArgumentParser) -> None:
    """Options of the page itself (both commands)."""
    p.add_argument("--host", default="127.0.0.1", help="address of the page")
    p.add_argument("--port", type=int, default=7860, help="port of the page")
    _cli.add_data(p, "dataset for the metrics tab's evaluation button", required=False)
    p.add_argument("--models", default="yolo11,frcnn", help="ensembles offered")
    p.add_argument("--max-upload-mb", type=int, default=50, help="upload limit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = _cli.subcommand(subparsers, "ui", run_ui)
    _cli.add_server(p)
    _add_page(p)

    d = _cli.subcommand(subparsers, "demo", run_demo)
    _cli.add_repository(d)
    _cli.add_ports(d)
    _add_page(d)


def _config(args: argparse.Namespace, server: str):
    from bonefrac.ui.app import UiConfig

    return UiConfig(
        server=server,
        models=tuple(_cli.split_list(args.models)),
        data=args.data,
        examples=sorted(str(p) for p in EXAMPLES.glob("*.jpg")),
        max_upload_mb=args.max_upload_mb,
    )


def _offline() -> None:
    """Gradio without analytics or hub calls (neither can be reached here)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_ui(args: argparse.Namespace) -> int:
    """Serve the Gradio demo page, calling a running Triton over gRPC.

    Serve the demo page: upload an X-ray (JPEG, PNG, DICOM), choose YOLO11, Faster R-CNN or
    both, see boxes, a table and a verdict. The page calls Triton over gRPC and loads no
    model. API endpoint: /detect.
    """
    from bonefrac.ui.app import launch

    _offline()
    print(
        f"bonefrac UI on http://{args.host}:{args.port} (Triton {args.server}); Ctrl-C stops it",
        flush=True,
    )
    launch(_config(args, args.server), host=args.host, port=args.port)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Start tritonserver and the page together, on 127.0.0.1.

    Start tritonserver on the model repository and the demo page against it; Ctrl-C stops
    both."""
    from bonefrac.cli import serve_until_stopped
    from bonefrac.ui.app import launch

    _offline()
    server = _cli.server_from_args(args, host="127.0.0.1")

    def start_ui():
        demo = launch(_config(args, server.grpc_url), host=args.host, port=args.port, block=False)
        return demo.close, (f"  demo page http://{args.host}:{args.port}",)

    return serve_until_stopped(server, on_ready=start_ui, name="demo")
