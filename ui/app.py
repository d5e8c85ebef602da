"""The bonefrac demo page: upload an X-ray, pick a model, see the fractures it finds beside the
labelled truth.

The page talks to Triton over gRPC through :mod:`bonefrac.client` and never loads a model itself.
Named API endpoint ``/detect`` (``gradio_client``): inputs (image file, model name, confidence
threshold), outputs (annotated image, detections table, verdict text).

Parts: :mod:`~bonefrac.ui.backend` (settings, the connection to Triton),
:mod:`~bonefrac.ui.handlers` (what each event does, callable without a browser),
:mod:`~bonefrac.ui.layout` (the components), :mod:`~bonefrac.ui.drawing` (pictures),
:mod:`~bonefrac.ui.labels` (label files, hits), :mod:`~bonefrac.ui.make_examples` (the examples'
rule).
"""

from __future__ import annotations

from bonefrac.ui.backend import MODELS, Backend, UiConfig
from bonefrac.ui.drawing import PALETTE, colour, draw_detections, legend_html, side_by_side
from bonefrac.ui.handlers import (
    BOTH,
    TABLE_HEADERS,
    apply_protocol,
    detect,
    detect_api,
    load_upload,
    status_html,
    verdict,
)
from bonefrac.ui.layout import DISCLAIMER, build_app

__all__ = [
    "BOTH",
    "DISCLAIMER",
    "MODELS",
    "PALETTE",
    "TABLE_HEADERS",
    "Backend",
    "UiConfig",
    "apply_protocol",
    "build_app",
    "colour",
    "detect",
    "detect_api",
    "draw_detections",
    "launch",
    "legend_html",
    "load_upload",
    "side_by_side",
    "status_html",
    "verdict",
]


def launch(config: UiConfig, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Build and start the page; returns the Gradio app (and blocks unless ``block=False``)."""
    import gradio as gr

    demo = build_app(config)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        max_file_size=f"{config.max_upload_mb}mb",
        css=demo.bonefrac_css,
        theme=gr.themes.Soft(),
        show_error=True,
        quiet=True,
    )
    return demo
