"""The bonefrac demo page: upload an X-ray, pick a model, see the fractures it finds.

The page talks to Triton over gRPC through :mod:`bonefrac.client` and never loads a model itself.
Named API endpoint ``/detect`` (``gradio_client``): inputs (image file, model name, confidence
threshold), outputs (annotated image, detections table, verdict text).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bonefrac.detections import Detections
from bonefrac.dicom import read_image_bytes
from bonefrac.errors import BonefracError
from bonefrac.processing import ImageDecodeError, decode_image

MODELS = ("yolo11", "frcnn")
BOTH = "both (side by side)"
DISCLAIMER = "Research use only. bonefrac is not a medical device and must not guide diagnosis."
#: Colour per class index (RGB), chosen to stay distinct on grey X-rays.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]
TABLE_HEADERS = ["model", "class", "score", "x1", "y1", "x2", "y2"]


@dataclass
class UiConfig:
    """Settings of the page.

    Attributes:
        server: Triton gRPC ``host:port``.
        models: ensembles offered.
        data: dataset yaml for the metrics tab (None: no evaluation button).
        examples: example image files.
        max_upload_mb: largest upload accepted.
        max_side: largest image side accepted, pixels.
        timeout_s: deadline of each inference.
        eval_cache_dir: where evaluation reports are cached (shared with ``bonefrac eval``).
    """

    server: str = "127.0.0.1:8001"
    models: tuple[str, ...] = MODELS
    data: str | None = None
    examples: list[str] = field(default_factory=list)
    max_upload_mb: int = 50
    max_side: int = 12_000
    timeout_s: float = 60.0
    eval_cache_dir: Path | None = None


def colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def draw_detections(image: np.ndarray, det: Detections, *, title: str = "") -> np.ndarray:
    """Boxes and ``class score`` labels on a copy of an ``(H, W, 3)`` RGB image."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(h, w) / 1000.0
    thick = max(2, int(round(3 * scale)))
    font = max(0.5, 0.7 * scale)
    for box, score, cid, name in zip(det.xyxy, det.scores, det.class_ids, det.class_names):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        c = colour(cid)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thick)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick // 2))
        ty = y1 - 4 if y1 - th - 6 > 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty + base - 2), c, -1)
        cv2.putText(
            out,
            label,
            (x1 + 2, ty - 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (0, 0, 0),
            max(1, thick // 2),
            cv2.LINE_AA,
        )
    if title:
        bar = np.full((int(40 * max(1.0, scale)), w, 3), 32, np.uint8)
        cv2.putText(
            bar,
            title,
            (8, bar.shape[0] - 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (255, 255, 255),
            max(1, thick // 2),
            cv2.LINE_AA,
        )
        out = np.concatenate([bar, out], axis=0)
    return out


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images next to each other on one canvas (heights padded), with a gap."""
    height = max(i.shape[0] for i in images)
    gap = np.full((height, 16, 3), 255, np.uint8)
    parts = []
    for i, img in enumerate(images):
        if img.shape[0] < height:
            pad = np.full((height - img.shape[0], img.shape[1], 3), 255, np.uint8)
            img = np.concatenate([img, pad], axis=0)
        parts += [gap, img] if i else [img]
    return np.concatenate(parts, axis=1)


def legend_html(names: Sequence[str]) -> str:
    items = "".join(
        f'<span style="display:inline-block;margin:2px 10px 2px 0">'
        f'<span style="display:inline-block;width:14px;height:14px;background:rgb{colour(i)};'
        f'vertical-align:middle;margin-right:4px;border:1px solid #333"></span>{html.escape(n)}'
        f"</span>"
        for i, n in enumerate(names)
    )
    return f'<div class="bf-legend">{items}</div>'


def apply_protocol(det: Detections, protocol: str) -> Detections:
    """Relabel detections under a class protocol (names only; boxes and scores unchanged)."""
    if protocol == "7class" or not len(det):
        return det
    from bonefrac.dataset import make_protocol
    from bonefrac.spec import DATASET_CLASSES

    mapping = make_protocol(protocol, DATASET_CLASSES).mapping
    names = tuple(mapping.get(n, n) for n in det.class_names)
    ids = [
        sorted(set(mapping.values())).index(n) if n in mapping.values() else int(c)
        for n, c in zip(names, det.class_ids)
    ]
    return Detections(
        xyxy=det.xyxy,
        scores=det.scores,
        class_ids=ids,
        class_names=names,
        image_size=det.image_size,
    )


def verdict(results: dict[str, Detections], *, threshold: float) -> str:
    """One line per model: "fracture suspected" with the top finding, or none found."""
    lines = []
    for model, det in results.items():
        if len(det) and det.scores.max() >= threshold:
            i = int(np.argmax(det.scores))
            lines.append(
                f"{model}: FRACTURE SUSPECTED - top finding {det.class_names[i]} "
                f"(score {det.scores[i]:.2f})"
            )
        else:
            lines.append(f"{model}: no fracture found at score >= {threshold:.2f}")
    return "\n".join(lines)


class Backend:
    """The page's connection to Triton: one gRPC client per model, reused by every request."""

    def __init__(self, config: UiConfig) -> None:
        import tritonclient.grpc as grpcclient

        from bonefrac.client import connect, parse_servers

        self.config = config
        self.clients = {
            m: connect(config.server, model=m, timeout_s=config.timeout_s) for m in config.models
        }
        self.urls = parse_servers(config.server)
        self._raws = {u: grpcclient.InferenceServerClient(u) for u in self.urls}

    def default_conf(self, fallback: float = 0.25) -> float:
        """The lowest default score threshold of the served models (each ensemble's spec holds
        its own: the operating point chosen at export); ``fallback`` when none can be read."""
        found = []
        for client in self.clients.values():
            try:
                spec = json.loads(client.model_parameters().get("spec", "{}"))
                found.append(float(spec["conf_threshold"]))
            except Exception:  # server not up yet, or not a bonefrac ensemble
                continue
        return round(min(found), 2) if found else fallback

    def raw(self):
        """A raw client of the first server that answers (for statistics)."""
        for raw in self._raws.values():
            try:
                if raw.is_server_live():
                    return raw
            except Exception:  # try the next server
                continue
        return self._raws[self.urls[0]]

    def status(self) -> dict[str, Any]:
        """Live/ready and the models loaded (``{"up": False, "error": ...}`` when all are down)."""
        up, error = [], ""
        for url, raw in self._raws.items():
            try:
                index = raw.get_model_repository_index(as_json=True).get("models", [])
                up.append(
                    {
                        "url": url,
                        "ready": raw.is_server_ready(),
                        "models": [
                            (m.get("name"), m.get("version", ""), m.get("state", "")) for m in index
                        ],
                    }
                )
            except Exception as exc:  # any transport failure means "down" to the page
                error = str(exc).splitlines()[0][:200]
        if not up:
            return {"up": False, "error": error}
        return {
            "up": True,
            "live": True,
            "ready": any(s["ready"] for s in up),
            "models": up[0]["models"],
            "servers_up": len(up),
            "servers": len(self.urls),
        }

    def server_times_us(self, model: str) -> dict[str, tuple[int, int]]:
        """Per composing model: cumulative (count, ns) of queue and compute phases."""
        stats = self.raw().get_inference_statistics(model_name="", as_json=True)
        out = {}
        prefix = f"{model}_"
        for m in stats.get("model_stats", []):
            name = m.get("name", "")
            if not name.startswith(prefix):
                continue
            s = m.get("inference_stats", {})
            for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
                entry = s.get(phase, {})
                out[f"{name[len(prefix) :]}.{phase}"] = (
                    int(entry.get("count", 0)),
                    int(entry.get("ns", 0)),
                )
        return out

    def detect(self, model: str, data: bytes, *, conf: float, iou: float | None) -> Detections:
        return self.clients[model].detect(data, conf_threshold=conf, iou_threshold=iou)


def _timing_md(model: str, round_trip_ms: float, before: dict, after: dict) -> str:
    parts = []
    for key, (count, ns) in after.items():
        c0, n0 = before.get(key, (0, 0))
        if count > c0:
            parts.append(f"{key} {(ns - n0) / 1e6 / (count - c0):.1f} ms")
    server = "; ".join(parts) if parts else "n/a"
    return f"**{model}**: round trip {round_trip_ms:.0f} ms. Server: {server}"


def load_upload(path: str | None, config: UiConfig) -> tuple[bytes, np.ndarray]:
    """Read an uploaded file: bytes to send (DICOM converted) and the RGB image to draw on.

    Raises:
        ValueError: with a message for the user (no file, too large, not an image).
    """
    if not path:
        raise ValueError("Upload an X-ray first (JPEG, PNG, DICOM ...), or pick an example.")
    file = Path(path)
    size_mb = file.stat().st_size / 1e6
    if size_mb > config.max_upload_mb:
        raise ValueError(f"The file is {size_mb:.0f} MB; the limit is {config.max_upload_mb} MB.")
    try:
        data = read_image_bytes(file.read_bytes())
        image = decode_image(data, max_side=config.max_side)
    except ImageDecodeError as exc:
        raise ValueError(f"{file.name} cannot be read as an X-ray: {exc}") from None
    return data, image


def build_app(config: UiConfig):
    """The Gradio Blocks of the page."""
    import gradio as gr

    backend = Backend(config)
    choices = [*config.models, BOTH] if len(config.models) > 1 else list(config.models)

    def run_detection(path, model, conf, iou=None, protocol="7class"):
        try:
            data, image = load_upload(path, config)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        models = list(config.models) if model == BOTH else [model]
        if any(m not in config.models for m in models):
            raise gr.Error(f"Unknown model {model!r}; choose one of {', '.join(choices)}.")
        results, timings, pictures, rows = {}, [], [], []
        for m in models:
            try:
                before = backend.server_times_us(m)
            except Exception:
                before = {}
            start = time.perf_counter()
            try:
                det = backend.detect(m, data, conf=float(conf), iou=iou)
            except BonefracError as exc:
                raise gr.Error(str(exc)) from None
            elapsed = (time.perf_counter() - start) * 1000
            try:
                timings.append(_timing_md(m, elapsed, before, backend.server_times_us(m)))
            except Exception:
                timings.append(f"**{m}**: round trip {elapsed:.0f} ms")
            det = apply_protocol(det, protocol)
            results[m] = det
            pictures.append(draw_detections(image, det, title=m if len(models) > 1 else ""))
            rows += [
                [m, n, round(float(s), 3), *[round(float(v), 1) for v in b]]
                for b, s, n in zip(det.xyxy, det.scores, det.class_names)
            ]
        annotated = pictures[0] if len(pictures) == 1 else side_by_side(pictures)
        return annotated, rows, verdict(results, threshold=float(conf)), "\n\n".join(timings)

    def detect_api(path, model, conf):
        annotated, rows, text, _ = run_detection(path, model, conf)
        return annotated, rows, text

    def status_md():
        s = backend.status()
        if not s["up"]:
            return (
                f'<div class="bf-down">Triton server at {html.escape(config.server)} is '
                f"unavailable. Detection is paused; this page reconnects by itself when the "
                f"server is back. ({html.escape(s['error'])})</div>"
            )
        models = (
            ", ".join(f"{n} v{v} ({st.lower()})" for n, v, st in s["models"] if n in config.models)
            or "none"
        )
        state = "ready" if s["ready"] else "not ready"
        count = f" ({s['servers_up']}/{s['servers']} servers up)" if s["servers"] > 1 else ""
        return (
            f'<div class="bf-up">Triton {html.escape(config.server)}: live, {state}{count}. '
            f"Models: {html.escape(models)}</div>"
        )

    css = """
    .bf-down {background:#b00020;color:white;padding:8px 12px;border-radius:6px;font-weight:600}
    .bf-up {background:#e8f5e9;color:#1b5e20;padding:8px 12px;border-radius:6px}
    .bf-disclaimer {background:#fff3cd;color:#664d03;padding:6px 12px;border-radius:6px;
                    font-weight:600}
    """
    with gr.Blocks(title="bonefrac: fracture detection on X-rays") as demo:
        gr.Markdown("# bonefrac: fracture detection on X-rays")
        gr.HTML(f'<div class="bf-disclaimer">{DISCLAIMER}</div>')
        status = gr.HTML(status_md())
        gr.Timer(5.0).tick(
            status_md, outputs=status, api_visibility="private", show_progress="hidden"
        )
        with gr.Tab("Detect"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(
                        label="X-ray (JPEG, PNG 8/16-bit, DICOM, ...)",
                        file_types=["image", ".dcm", ".dicom"],
                        type="filepath",
                        elem_id="xray-upload",
                    )
                    model = gr.Radio(
                        choices, value=choices[0], label="Model", elem_id="model-choice"
                    )
                    conf = gr.Slider(
                        0.0,
                        1.0,
                        value=backend.default_conf(),
                        step=0.01,
                        label="Confidence threshold",
                        info="starts at the lowest of the models' operating points "
                        "(score at 1 false positive per image on the valid split)",
                        elem_id="conf-slider",
                    )
                    iou = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="NMS IoU threshold")
                    protocol = gr.Dropdown(
                        ["7class", "6class", "agnostic"],
                        value="7class",
                        label="Class protocol (6class: humerus fracture counted as humerus; "
                        "agnostic: every finding is 'fracture')",
                        elem_id="protocol",
                    )
                    run = gr.Button("Detect fractures", variant="primary", elem_id="detect-btn")
                    if config.examples:
                        gr.Examples(
                            config.examples,
                            inputs=upload,
                            label="Examples (valid split, Roboflow bone fracture "
                            "dataset, CC BY 4.0)",
                        )
                with gr.Column(scale=2):
                    annotated = gr.Image(
                        label="Detections", type="numpy", elem_id="annotated", interactive=False
                    )
                    gr.HTML(legend_html(_class_names(backend)))
                    verdict_box = gr.Textbox(label="Verdict", elem_id="verdict", lines=2)
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS,
                        label="Detections (pixels)",
                        elem_id="detections-table",
                        interactive=False,
                    )
                    timing = gr.Markdown(elem_id="timing")
            run.click(
                run_detection,
                [upload, model, conf, iou, protocol],
                [annotated, table, verdict_box, timing],
                api_visibility="private",
                concurrency_limit=4,
                concurrency_id="detect",
            )
            # The public API: exactly (image file, model name, confidence threshold).
            api_button = gr.Button(visible=False)
            api_button.click(
                detect_api,
                [upload, model, conf],
                [annotated, table, verdict_box],
                api_name="detect",
                concurrency_id="detect",
            )
        with gr.Tab("Metrics"):
            _metrics_tab(gr, config, backend)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.bonefrac_css = css  # launch() takes it (Gradio 6 moved css to launch)
    return demo


def _class_names(backend: Backend) -> list[str]:
    for client in backend.clients.values():
        try:
            import json

            return json.loads(client.model_parameters().get("class_names", "[]"))
        except Exception:
            continue
    return []


def _metrics_tab(gr, config: UiConfig, backend: Backend) -> None:
    from bonefrac.client.evaluate import (
        default_cache_dir,
        evaluate,
        plot_froc,
        plot_pr,
        served_model,
    )

    cache = config.eval_cache_dir or default_cache_dir()
    headers = [
        "model",
        "protocol",
        "AP50-95",
        "AP50",
        "AP75",
        "sens@1FP",
        "FROC mean",
        "image AUROC",
        "images",
    ]

    def cached_reports(protocol: str) -> list[dict]:
        import json

        reports = []
        for path in sorted(cache.glob("*.json")):
            try:
                r = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if (
                r.get("protocol", {}).get("name") == protocol
                and r["model"]["name"] in config.models
            ):
                reports.append(r)
        # newest per model
        latest: dict[str, dict] = {}
        for r in sorted(reports, key=lambda r: r.get("run", {}).get("date", "")):
            latest[r["model"]["name"]] = r
        return list(latest.values())

    def show(protocol: str):
        reports = cached_reports(protocol)
        rows = [
            [
                r["model"]["name"],
                protocol,
                round(r["ap50_95"], 4),
                round(r["ap50"], 4),
                round(r["ap75"], 4),
                round(r["sens_at_1fp"], 3),
                round(r["froc_mean"], 3),
                None if r["image_auroc"] is None else round(r["image_auroc"], 3),
                r["data"]["images"],
            ]
            for r in reports
        ]
        if not reports:
            return rows, None, None, "No cached evaluation yet: run one below."
        folder = cache / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        froc = plot_froc(reports, folder / f"froc_{protocol}.png")
        pr = plot_pr(reports, folder / f"pr_{protocol}.png")
        return rows, str(froc), str(pr), f"{len(reports)} cached report(s) in {cache}"

    def run_eval(protocol: str, which: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        if not config.data:
            raise gr.Error("Start the UI with --data DATA.yaml to run evaluations.")
        try:
            evaluate(
                served_model(config.server, which),
                data=config.data,
                split="valid",
                protocol=protocol,
                cache_dir=cache,
                progress=True,
            )
        except BonefracError as exc:
            raise gr.Error(str(exc)) from None
        return show(protocol)

    with gr.Row():
        protocol = gr.Dropdown(["6class", "7class", "agnostic"], value="6class", label="Protocol")
        which = gr.Dropdown(list(config.models), value=config.models[0], label="Model to evaluate")
    rows, froc_png, pr_png, text = show("6class")
    table = gr.Dataframe(
        value=rows or None,
        headers=headers,
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
    protocol.change(show, protocol, [table, froc, pr, note], api_visibility="private")
    button.click(
        run_eval,
        [protocol, which],
        [table, froc, pr, note],
        api_visibility="private",
        concurrency_limit=1,
        concurrency_id="evaluation",
    )


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
