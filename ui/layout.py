"""The page's Gradio layout: components and the wiring of their events to
:mod:`bonefrac.ui.handlers` and :mod:`bonefrac.ui.metrics`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bonefrac.errors import BonefracError
from bonefrac.ui import handlers, metrics
from bonefrac.ui.backend import Backend, UiConfig
from bonefrac.ui.drawing import legend_html
from bonefrac.ui.make_examples import RULE

DISCLAIMER = "Research use only. bonefrac is not a medical device and must not guide diagnosis."
CSS = """
.bf-down {background:#b00020;color:white;padding:8px 12px;border-radius:6px;font-weight:600}
.bf-up {background:#e8f5e9;color:#1b5e20;padding:8px 12px;border-radius:6px}
.bf-disclaimer {background:#fff3cd;color:#664d03;padding:6px 12px;border-radius:6px;
                font-weight:600}
"""


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the user's mistakes (``ValueError``, ``BonefracError``) shown on the page."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, BonefracError) as exc:
            raise gr.Error(str(exc)) from None

    return wrapped


def example_rows(images: list[str]) -> list[list[str | None]]:
    """``[image, its label file or None]`` per example (the label file is ``NAME.txt`` beside)."""
    rows = []
    for image in images:
        label = Path(image).with_suffix(".txt")
        rows.append([image, str(label) if label.is_file() else None])
    return rows


def _inputs_column(gr, backend: Backend) -> dict[str, Any]:
    config = backend.config
    choices = handlers.choices(config)
    c = {
        "upload": gr.File(
            label="X-ray (JPEG, PNG 8/16-bit, DICOM, ...)",
            file_types=["image", ".dcm", ".dicom"],
            type="filepath",
            elem_id="xray-upload",
        ),
        "labels": gr.File(
            label="Its YOLO label file (optional .txt, the dataset's class ids): labelled boxes "
            "drawn dashed in white, and which findings hit them",
            file_types=[".txt"],
            type="filepath",
            elem_id="label-upload",
        ),
        "model": gr.Radio(choices, value=choices[0], label="Model", elem_id="model-choice"),
    }
    c["confs"] = []
    for m in config.models:
        default = backend.default_conf(m)
        c["confs"].append(
            gr.Slider(
                0.0,
                1.0,
                value=round(default, 4),
                step=0.0001,
                label=f"{m}: confidence threshold",
                info=f"starts at {m}'s own operating point, {default:.4f} (the score at 1 false "
                "positive per image on the valid split); with both, each model uses its own",
                visible=m == choices[0],
                elem_id=f"conf-{m}",
            )
        )
    c["iou"] = gr.Slider(
        0.0, 1.0, value=0.0, step=0.05, label="NMS IoU threshold (0: each model's own)"
    )
    c["protocol"] = gr.Dropdown(
        ["7class", "6class", "agnostic"],
        value="7class",
        label="Class protocol (6class: humerus fracture counted as humerus; "
        "agnostic: every finding is 'fracture'); a finding hits a label of the same class",
        elem_id="protocol",
    )
    c["run"] = gr.Button("Detect fractures", variant="primary", elem_id="detect-btn")
    if config.examples:
        gr.Examples(
            example_rows(config.examples),
            inputs=[c["upload"], c["labels"]],
            label=f"Examples, {RULE}; with their labels (Roboflow bone fracture dataset, "
            "CC BY 4.0)",
            elem_id="examples",
        )
    return c


def _outputs_column(gr, backend: Backend) -> dict[str, Any]:
    return {
        "annotated": gr.Image(
            label="Detections", type="numpy", elem_id="annotated", interactive=False
        ),
        "legend": gr.HTML(legend_html(backend.class_names())),
        "verdict": gr.Textbox(label="Verdict", elem_id="verdict", lines=2),
        "truth": gr.Markdown(handlers.NO_LABELS, elem_id="truth"),
        "table": gr.Dataframe(
            headers=handlers.TABLE_HEADERS,
            label="Detections (pixels)",
            elem_id="detections-table",
            interactive=False,
        ),
        "timing": gr.Markdown(elem_id="timing"),
    }


def _wire_detect(gr, backend: Backend, i: dict[str, Any], o: dict[str, Any]) -> None:
    models = backend.config.models

    def run(path, labels_path, model, iou, protocol, *confs):
        view = handlers.detect(
            backend,
            path,
            model,
            confs=dict(zip(models, confs)),
            iou=float(iou) or None,
            protocol=protocol,
            labels_path=labels_path,
        )
        return view.annotated, view.rows, view.verdict, view.truth, view.timing

    def show_sliders(model):
        return [gr.update(visible=model in (m, handlers.BOTH)) for m in models]

    i["model"].change(show_sliders, i["model"], i["confs"], api_visibility="private")
    # A new image drops the previous image's labels (examples set both at once).
    i["upload"].upload(lambda: None, None, i["labels"], api_visibility="private")
    i["run"].click(
        user_errors(run),
        [i["upload"], i["labels"], i["model"], i["iou"], i["protocol"], *i["confs"]],
        [o["annotated"], o["table"], o["verdict"], o["truth"], o["timing"]],
        api_visibility="private",
        concurrency_limit=4,
        concurrency_id="detect",
    )
    # The public API: exactly (image file, model name, confidence threshold for every model).
    api_button = gr.Button(visible=False)
    api_conf = gr.Slider(0.0, 1.0, value=0.25, label="Confidence threshold", visible=False)
    api_button.click(
        user_errors(functools.partial(handlers.detect_api, backend)),
        [i["upload"], i["model"], api_conf],
        [o["annotated"], o["table"], o["verdict"]],
        api_name="detect",
        concurrency_id="detect",
    )


def _metrics_tab(gr, config: UiConfig) -> None:
    with gr.Row():
        protocol = gr.Dropdown(["6class", "7class", "agnostic"], value="6class", label="Protocol")
        which = gr.Dropdown(list(config.models), value=config.models[0], label="Model to evaluate")
    rows, froc_png, pr_png, text = metrics.show(config, "6class")
    table = gr.Dataframe(
        value=rows or None,
        headers=metrics.HEADERS,
        label="Evaluation on the valid split (cached)",
        interactive=False,
    )
    with gr.Row():
        froc = gr.Image(value=froc_png, label="FROC", type="filepath", interactive=False)
        pr = gr.Image(
            value=pr_png,
            label="Precision-recall per class (IoU 0.5)",
            type="filepath",
            interactive=False,
        )
    note = gr.Markdown(text)
    button = gr.Button("Run evaluation on the valid split (in the background)")
    outputs = [table, froc, pr, note]
    protocol.change(
        functools.partial(metrics.show, config), protocol, outputs, api_visibility="private"
    )

    def run_eval(protocol: str, model: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return metrics.run_evaluation(config, protocol, model)

    button.click(
        user_errors(run_eval),
        [protocol, which],
        outputs,
        api_visibility="private",
        concurrency_limit=1,
        concurrency_id="evaluation",
    )


def build_app(config: UiConfig, backend: Backend | None = None):
    """The Gradio Blocks of the page (``demo.bonefrac_css``: the CSS to pass to ``launch``)."""
    import gradio as gr

    backend = backend or Backend(config)
    with gr.Blocks(title="bonefrac: fracture detection on X-rays") as demo:
        gr.Markdown("# bonefrac: fracture detection on X-rays")
        gr.HTML(f'<div class="bf-disclaimer">{DISCLAIMER}</div>')
        status_md = functools.partial(handlers.status_html, backend)
        status = gr.HTML(status_md())
        gr.Timer(5.0).tick(
            status_md, outputs=status, api_visibility="private", show_progress="hidden"
        )
        with gr.Tab("Detect"):
            with gr.Row():
                with gr.Column(scale=1):
                    inputs = _inputs_column(gr, backend)
                with gr.Column(scale=2):
                    outputs = _outputs_column(gr, backend)
            _wire_detect(gr, backend, inputs, outputs)
        with gr.Tab("Metrics"):
            _metrics_tab(gr, config)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.bonefrac_css = CSS  # launch() takes it (Gradio 6 moved css to launch)
    return demo
