"""The Metrics tab's handlers: the evaluator's cached reports per model (table, FROC and PR
plots), and an evaluation of a served model on the valid split."""

from __future__ import annotations

import json
from pathlib import Path

from bonefrac.ui.backend import UiConfig

HEADERS = [
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


def cache_dir(config: UiConfig) -> Path:
    """Where evaluation reports are cached (shared with ``bonefrac eval``)."""
    from bonefrac.client.evaluate import default_cache_dir

    return config.eval_cache_dir or default_cache_dir()


def cached_reports(config: UiConfig, protocol: str) -> list[dict]:
    """The newest cached report per offered model under a protocol (unreadable files skipped)."""
    reports = []
    for path in sorted(cache_dir(config).glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            report.get("protocol", {}).get("name") == protocol
            and report.get("model", {}).get("name") in config.models
        ):
            reports.append(report)
    latest: dict[str, dict] = {}
    for report in sorted(reports, key=lambda r: r.get("run", {}).get("date", "")):
        latest[report["model"]["name"]] = report
    return list(latest.values())


def _row(report: dict, protocol: str) -> list:
    auroc = report["image_auroc"]
    return [
        report["model"]["name"],
        protocol,
        round(report["ap50_95"], 4),
        round(report["ap50"], 4),
        round(report["ap75"], 4),
        round(report["sens_at_1fp"], 3),
        round(report["froc_mean"], 3),
        None if auroc is None else round(auroc, 3),
        report["data"]["images"],
    ]


def show(config: UiConfig, protocol: str) -> tuple[list[list], str | None, str | None, str]:
    """(table rows, FROC plot file, PR plot file, note) of the cached reports."""
    from bonefrac.client.evaluate import plot_froc, plot_pr

    reports = cached_reports(config, protocol)
    if not reports:
        return [], None, None, "No cached evaluation yet: run one below."
    folder = cache_dir(config) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    froc = plot_froc(reports, folder / f"froc_{protocol}.png")
    pr = plot_pr(reports, folder / f"pr_{protocol}.png")
    note = f"{len(reports)} cached report(s) in {cache_dir(config)}"
    return [_row(r, protocol) for r in reports], str(froc), str(pr), note


def run_evaluation(config: UiConfig, protocol: str, model: str):
    """Evaluate a served model on the valid split (cached), then :func:`show`.

    Raises:
        ValueError: the page was started without a dataset.
        BonefracError: the evaluation failed (the message says why).
    """
    from bonefrac.client.evaluate import evaluate, served_model

    if not config.data:
        raise ValueError("Start the UI with --data DATA.yaml to run evaluations.")
    evaluate(
        served_model(config.server, model),
        data=config.data,
        split="valid",
        protocol=protocol,
        cache_dir=cache_dir(config),
        progress=True,
    )
    return show(config, protocol)
