"""The page's settings and its connection to Triton (every call goes through
:mod:`bonefrac.client`; the page never loads a model itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonefrac.client import ClientError
from bonefrac.detections import Detections

MODELS = ("yolo11", "frcnn")
#: Triton's per-request phases, in the order the server runs them.
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class UiConfig:
    """Settings of the page.

    Attributes:
        server: Triton gRPC ``host:port`` (several, comma-separated, are balanced).
        models: ensembles offered.
        data: dataset yaml for the metrics tab (None: no evaluation button).
        examples: example image files (a YOLO label file ``NAME.txt`` beside ``NAME.jpg`` is
            drawn with the example).
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


class Backend:
    """One gRPC client per model (reused by every request) and one per server for its status and
    statistics; every call goes through :class:`bonefrac.client.DetectionClient`."""

    def __init__(self, config: UiConfig) -> None:
        from bonefrac.client import NO_RETRY, DetectionClient, connect, parse_servers

        self.config = config
        self.clients = {
            m: connect(config.server, model=m, timeout_s=config.timeout_s) for m in config.models
        }
        self.urls = parse_servers(config.server)
        # The status line polls every few seconds: no retries, a short deadline.
        self._servers = [
            DetectionClient(u, model=config.models[0], timeout_s=5.0, retry=NO_RETRY)
            for u in self.urls
        ]

    def model_spec(self, model: str) -> dict[str, Any]:
        """The export spec a served ensemble carries (``{}`` when it cannot be read: the server
        is down, or the model is not a bonefrac ensemble)."""
        try:
            spec = json.loads(self.clients[model].model_parameters().get("spec") or "{}")
        except (ClientError, ValueError):
            return {}
        return spec if isinstance(spec, dict) else {}

    def default_conf(self, model: str, *, fallback: float = 0.25) -> float:
        """The model's own score threshold: its operating point, chosen at export (1 false
        positive per image on the valid split); ``fallback`` when it cannot be read."""
        value = self.model_spec(model).get("conf_threshold")
        return float(value) if isinstance(value, (int, float)) else fallback

    def class_names(self) -> list[str]:
        """The served models' class names (the first model that answers; [] when none does)."""
        for model in self.config.models:
            names = self.model_spec(model).get("class_names")
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        return []

    def status(self) -> dict[str, Any]:
        """Live/ready and the models loaded (``{"up": False, "error": ...}`` when all are down)."""
        up, error = [], ""
        for client in self._servers:
            try:
                up.append(client.status())
            except ClientError as exc:  # unreachable: "down" to the page
                error = str(exc).splitlines()[0][:200]
        if not up:
            return {"up": False, "error": error}
        return {
            "up": True,
            "live": any(s.live for s in up),
            "ready": any(s.ready for s in up),
            "models": list(up[0].models),
            "servers_up": len(up),
            "servers": len(self.urls),
        }

    def phase_times_ns(self, model: str) -> dict[str, tuple[int, int]]:
        """Cumulative ``(count, nanoseconds)`` of each phase of each composing model of an
        ensemble, keyed ``"<step>.<phase>"`` (e.g. ``"detector.compute_infer"``), from the first
        server that answers; for a one-model pipeline, each step's time as ``compute_infer``
        from the server's metrics port (:func:`bonefrac.server.step_times`).

        Raises:
            ClientError: no server answered.
        """
        from bonefrac.server import metrics_url_of, step_times

        last: ClientError | None = None
        for client in self._servers:
            try:
                stats = client.inference_statistics("")
                break
            except ClientError as exc:
                last = exc
        else:
            raise last or ClientError("no server to ask for statistics")
        out = {}
        prefix = f"{model}_"
        for entry in stats.get("model_stats", []):
            name = entry.get("name", "")
            if not name.startswith(prefix):
                continue
            phases = entry.get("inference_stats", {})
            for phase in PHASES:
                counted = phases.get(phase, {})
                out[f"{name[len(prefix) :]}.{phase}"] = (
                    int(counted.get("count", 0)),
                    int(counted.get("ns", 0)),
                )
        # A one-model pipeline's steps: on the metrics port of the server that answered.
        metrics = metrics_url_of(self.urls[self._servers.index(client)])
        for step, times in (step_times(metrics, model) if metrics else {}).items():
            out[f"{step}.compute_infer"] = times
        return out

    def detect(
        self, model: str, data: bytes, *, conf: float | None, iou: float | None
    ) -> Detections:
        """Detections of one encoded image (None thresholds: the model's own defaults).

        Raises:
            ClientError: the request failed (the message says why).
        """
        return self.clients[model].detect(data, conf_threshold=conf, iou_threshold=iou)
