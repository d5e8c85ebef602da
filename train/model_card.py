"""Model cards from what was measured: the training record next to the weights and the report of
``bonefrac eval`` on the valid split. Nothing in a card is typed by hand.

``python -m bonefrac.train.model_card --title ... --train-record ... --eval ... --out FILE``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DATA_CREDIT = (
    "Bone Fracture Detection dataset (Roboflow project `veda/bone-fracture-detection-daoon` v4, "
    "published on Kaggle as `pkdarabi/bone-fracture-detection-computer-vision-project`, "
    "DOI 10.13140/RG.2.2.14400.34569), CC BY 4.0; train split only (3,631 images, 2,088 objects)."
)


#: Published results on this data (valid split, 6-class, ImageNet/COCO-pretrained, on a GPU), the
#: reference every card and the README compare with.
PUBLISHED = {
    "frcnn": {"name": "Faster R-CNN", "ap50": 0.271, "ap50_95": 0.088, "sens_at_1fp": 0.471},
    "yolo": {"name": "YOLO", "ap50": 0.160, "ap50_95": 0.058, "sens_at_1fp": 0.235},
}
BENCH_RECORD = Path("benchmarks/results/runs.json")


def published_line() -> str:
    return (
        "Reference (published, valid split, 6-class, pretrained): "
        + "; ".join(
            f"{p['name']} AP50 {p['ap50']:.3f}, AP50-95 {p['ap50_95']:.3f}, "
            f"{p['sens_at_1fp']:.3f} at 1 FP/image"
            for p in PUBLISHED.values()
        )
        + "."
    )


def served_speed(model: str, record: dict[str, Any]) -> dict[str, float] | None:
    """The shipped ensemble's row at each concurrency in a ``make bench`` record (the main
    sweep: no tuning variant, image-size or input-mode step)."""
    rows = {}
    for run in record.get("runs", []):
        main_sweep = not (run.get("variant") or run.get("image_side") or run.get("input"))
        if run["target"] == "triton" and run.get("model") == model and main_sweep:
            rows.setdefault(run["concurrency"], run)
    if 1 not in rows:
        return None
    best = max(rows.values(), key=lambda r: r["throughput_rps"])
    return {
        "c1_rps": rows[1]["throughput_rps"],
        "c1_p50_ms": rows[1]["p50_ms"],
        "best_rps": best["throughput_rps"],
        "best_concurrency": best["concurrency"],
    }


def speed_note(model: str, compare_to: str | None, bench: Path = BENCH_RECORD) -> str | None:
    """A card's speed line, from the committed ``make bench`` record."""
    if not bench.is_file():
        return None
    record = json.loads(bench.read_text())
    speed = served_speed(model, record)
    if speed is None:
        return None
    text = (
        f"Served speed in `make bench` ({record.get('started', record.get('date'))}, "
        f"`{bench}`): {speed['c1_rps']:.1f} requests/s at concurrency 1 (p50 "
        f"{speed['c1_p50_ms']:.0f} ms), at most {speed['best_rps']:.1f}/s (concurrency "
        f"{speed['best_concurrency']})"
    )
    other = served_speed(compare_to, record) if compare_to else None
    if other:
        text += f"; {speed['best_rps'] / other['best_rps']:.2f}x `{compare_to}`'s best"
    return text + "."


def distance_note(report: dict[str, Any], ref: dict[str, Any], run: Path) -> str:
    """How far a model is from the published one, and whether its learning curve has flattened
    (a run scored by ``python -m bonefrac.train.curve``; the curve may go past the shipped
    epoch)."""
    from bonefrac.train.curve import plateau, read_curve

    text = (
        f"How far from the published pretrained {ref['name']}: AP50 {report['ap50']:.4f} is "
        f"{report['ap50'] / ref['ap50']:.0%} of its {ref['ap50']:.3f}, sensitivity at 1 FP/image "
        f"{report['sens_at_1fp']:.3f} against {ref['sens_at_1fp']:.3f}"
    )
    if found := plateau(read_curve(run)):
        text += f"; {found.sentence()} (`{run}/curve.csv`)"
    return text + "."


def readme_models(cards_path: Path) -> str:
    """The README's paragraph on the bundled models, from the same records as the cards."""
    spec = json.loads(cards_path.read_text())
    reports = {r["model"]["name"]: r for r in json.loads(Path(spec["eval"]).read_text())}
    parts = []
    for entry in spec["models"]:
        report = reports[entry["model"]]
        cfg = training_record(Path(entry["run"]), epoch=entry.get("epoch"))
        ref = PUBLISHED.get(entry.get("published", ""), {})
        parts.append(
            f"`{entry['model']}`: {entry['title'].split(' (')[0]}, "
            f"{cfg['epochs_done']} epochs at {_image_size(cfg['config'])}: AP50 "
            f"{report['ap50']:.3f}, AP50-95 {report['ap50_95']:.3f}, sensitivity "
            f"{report['sens_at_1fp']:.3f} at 1 false positive per image"
            + (f" (published pretrained {ref['name']}: AP50 {ref['ap50']:.3f})" if ref else "")
        )
    return (
        "**The bundled models are weak.** Trained by this project from scratch (no pretrained "
        "weights; each card says on what machine), scored by `bonefrac eval` on the valid split "
        "(6-class): "
        + "; ".join(parts)
        + ". Each ensemble's default score threshold is its 1-false-positive-per-image "
        "operating point on valid. Model cards with every number and how it was obtained: "
        "[docs/MODELS.md](docs/MODELS.md)."
    )


README_BEGIN = "<!-- models: written by python -m bonefrac.train.model_card --readme README.md -->"
README_END = "<!-- /models -->"


def with_readme_models(readme: str, cards_path: Path) -> str:
    """``readme`` with the text between its models markers rewritten from the records."""
    head, sep, rest = readme.partition(README_BEGIN + "\n")
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise SystemExit(f"the README has no '{README_BEGIN}' ... '{README_END}' block")
    return head + sep + readme_models(cards_path) + "\n" + README_END + tail


def _epochs(training: dict[str, Any]) -> str:
    """Epochs done against the plan: a count, or a time budget the schedule was fitted to."""
    cfg, done = training.get("config", {}), training.get("epochs_done", "n/a")
    budget_s = cfg.get("time_budget_s") or (cfg.get("time_h") or 0) * 3600
    if budget_s:
        return f"{done}, the schedule fitted to {budget_s / 60:.1f} min of training"
    return f"{done} of {cfg.get('epochs', 'n/a')} planned"


def _fmt(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _image_size(cfg: dict[str, Any]) -> str:
    if "imgsz" in cfg:
        return f"{cfg['imgsz']} px letterbox"
    if "min_size" in cfg:
        return (
            f"shorter side {cfg['min_size']} px, longer side at most {cfg.get('max_size', '?')} px "
            "(resized inside the graph)"
        )
    return "n/a"


def _operating_points(report: dict[str, Any], served_conf: float | None) -> list[str]:
    """The card's lines on thresholds: FROC operating points, the served default, the image-level
    result and the per-class AP table."""
    lines = []
    points = {k: v for k, v in (report.get("froc_thresholds") or {}).items() if v is not None}
    if points:
        text = "Score thresholds of those operating points: " + ", ".join(
            f"{k} FP/image: {v:.4f}" for k, v in points.items()
        )
        if served_conf is not None:
            text += f". Served default threshold: {served_conf:.4f}"
        lines += [text + ".", ""]
    lines += [
        f"Image level at score >= {report['operating_threshold']}: sensitivity "
        f"{_fmt(report['image_sensitivity'], 3)}, specificity "
        f"{_fmt(report['image_specificity'], 3)}.",
        "",
        "| class | AP50-95 | AP50 |",
        "| --- | --- | --- |",
    ]
    for name, ap in report["per_class_ap"].items():
        lines.append(f"| {name} | {_fmt(ap)} | {_fmt(report['per_class_ap50'][name])} |")
    return lines


def card(
    *,
    title: str,
    model: str,
    architecture: str,
    training: dict[str, Any],
    report: dict[str, Any],
    artifact: Path | None,
    notes: list[str],
    served_conf: float | None = None,
) -> str:
    """One model card in Markdown (``served_conf``: the ensemble's default score threshold)."""
    cfg = training.get("config", {})
    lines = [
        f"## {title}",
        "",
        "**Research use only; not a medical device.**",
        "",
        "| | |",
        "| --- | --- |",
        f"| served as | ensemble `{model}` (`model_repository/`) |",
        f"| architecture | {architecture} |",
        f"| data | {DATA_CREDIT} |",
        f"| classes (model) | {', '.join(training.get('class_names') or [])} |",
        f"| image size | {_image_size(cfg)} |",
        f"| epochs | {_epochs(training)} |",
        f"| batch, seed | {cfg.get('batch', 'n/a')}, {cfg.get('seed', 'n/a')} |",
        "| pretrained weights | none (trained from scratch) |",
        f"| training wall time | {training.get('wall_time', 'n/a')} |",
        f"| machine | {training.get('machine', 'n/a')} |",
        f"| artifact | `{artifact}` ({artifact.stat().st_size / 1e6:.1f} MB, SHA-256 "
        f"`{report['model']['sha256'][:16]}...`) |"
        if artifact
        else "| artifact | n/a |",
        "",
        f"### Valid split, protocol {report['protocol']['name']} (measured by `bonefrac eval`, "
        f"{report['data']['images']} images, {report['counts']['objects']} objects)",
        "",
        "| AP50-95 | AP50 | AP75 | sensitivity at 1 FP/image | FROC mean | image AUROC |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {_fmt(report['ap50_95'])} | {_fmt(report['ap50'])} | {_fmt(report['ap75'])} | "
        f"{_fmt(report['sens_at_1fp'], 3)} | {_fmt(report['froc_mean'], 3)} | "
        f"{_fmt(report['image_auroc'], 3)} |",
        "",
        "FROC sensitivity at false positives per image: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in report["froc"].items())
        + ".",
        "",
    ]
    lines += _operating_points(report, served_conf)
    lines += [
        "",
        published_line(),
        "",
        "Known limits:",
    ]
    lines += [f"- {n}" for n in notes]
    command = (
        f"bonefrac eval --data DATA.yaml --split valid --model {model} "
        f"--protocol {report['protocol']['name']} --server HOST:PORT"
    )
    lines.append(f"- Reproduce the numbers: `{command}` against `make demo`.")
    return "\n".join(lines) + "\n"


def _device_label(device: str | None, cpus: Any) -> str:
    return f"{cpus}-core CPU" if device in (None, "", "cpu") else device


def epochs_by_machine(record: dict[str, Any], last_epoch: int) -> str:
    """Which epochs ran on which device, from a training record's start and resumes
    (``epochs 1-4: 2-core CPU; 5-12: cuda: NVIDIA H200``, with the precision where a resume
    changed it: ``9-12: 2-core CPU, bfloat16``); just the device when one ran all."""
    machine = record.get("machine", {})
    start = machine.get("device") or record.get("config", {}).get("device")
    precision = record.get("config", {}).get("precision", "float32")
    spans = [(1, _device_label(start, machine.get("cpus", "?")))]
    for r in record.get("resumes", []):
        if r["after_epoch"] < last_epoch and "device" in r:
            label = _device_label(r["device"], r.get("cpus", machine.get("cpus", "?")))
            if r.get("precision", precision) != precision:  # a resume in another precision
                label += f", {r['precision']}"
            if label != spans[-1][1]:
                spans.append((r["after_epoch"] + 1, label))
    if len(spans) == 1:
        return spans[0][1]
    ends = [first - 1 for first, _ in spans[1:]] + [last_epoch]
    return "epochs " + "; ".join(
        f"{first}-{end}: {label}" if end > first else f"{first}: {label}"
        for (first, label), end in zip(spans, ends)
    )


def training_record(
    run_dir: Path, *, shared_cores: str = "", epoch: int | None = None
) -> dict[str, Any]:
    """What a card says about training, read from a run folder of ``bonefrac train``:
    ``bonefrac_train.json`` (config, machine, versions) and ``results.csv`` (one row per epoch;
    Ultralytics' has cumulative ``time``, bonefrac's Faster R-CNN log has ``epoch_s``).
    ``epoch``: the epoch the shipped model is from, when the run went on after it (the epochs,
    time and resumes after it are left out)."""
    import csv

    record = json.loads((run_dir / "bonefrac_train.json").read_text())
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    rows = [{k.strip(): v for k, v in r.items()} for r in rows]
    if epoch is not None:
        rows = [r for r in rows if int(float(r["epoch"])) <= epoch]
        record["resumes"] = [r for r in record.get("resumes", []) if r["after_epoch"] < epoch]
    if rows and "epoch_s" in rows[0]:
        seconds = sum(float(r["epoch_s"]) for r in rows)
    elif rows and "time" in rows[0]:
        seconds = float(rows[-1]["time"])
    else:
        seconds = 0.0
    machine = record.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
    spec = record.get("spec", {})
    names = spec.get("class_names") or record.get("class_names")
    if not names:
        from bonefrac.spec import DATASET_CLASSES

        names = list(DATASET_CLASSES)
    wall = f"{seconds / 3600:.2f} h for {len(rows)} epochs (results.csv of the run)"
    if record.get("resumes"):
        wall += "; " + "; ".join(
            f"resumed after epoch {r['after_epoch']} with {r['epochs']} epochs planned"
            + (f" (was {r['planned_before']})" if r["planned_before"] != r["epochs"] else "")
            for r in record["resumes"]
        )
    if shared_cores:
        wall += f"; {shared_cores}"
    if epoch is not None:
        wall += f"; the model shipped is the one after epoch {epoch} (the run went on)"
    where = machine.get("gpu") or "no GPU"
    if (by_machine := epochs_by_machine(record, len(rows))).startswith("epochs"):
        where = by_machine
    return {
        "config": record.get("config", {}),
        "class_names": names,
        "epochs_done": len(rows),
        "wall_time": wall,
        "machine": f"{machine.get('platform', 'n/a')}, {machine.get('cpus', '?')} CPU cores, "
        f"{where}; {versions}",
    }


def _served_conf(model: str, repository: str = "model_repository") -> float | None:
    from bonefrac.pipeline import read_repository_model

    try:
        return read_repository_model(repository, model).spec.conf_threshold
    except Exception:  # not in this repository
        return None


def models_doc(cards_path: Path) -> str:
    """The whole models document: every card listed in ``cards_path`` (JSON: title, intro
    paragraphs, the ``bonefrac eval --json`` report and, per model, its title, architecture,
    training run folder, artifact and notes), numbers from the report and the run folders."""
    spec = json.loads(cards_path.read_text())
    reports = {r["model"]["name"]: r for r in json.loads(Path(spec["eval"]).read_text())}
    parts = [f"# {spec['title']}", ""]
    for paragraph in spec.get("intro", []):
        parts += [paragraph, ""]
    for entry in spec["models"]:
        name = entry["model"]
        if name not in reports:
            raise SystemExit(f"{spec['eval']} has no report for '{name}': run bonefrac eval")
        report = reports[name]
        notes = list(entry.get("notes", []))
        other = entry.get("compare_to")
        speed = speed_note(name, other)
        if speed:
            notes.append(speed)
        if ref := PUBLISHED.get(entry.get("published", "")):
            notes.insert(0, distance_note(report, ref, Path(entry["run"])))
        if other in reports:
            delta = report["ap50"] - reports[other]["ap50"]
            notes.insert(
                0,
                f"AP50 {report['ap50']:.4f} vs {reports[other]['ap50']:.4f} for `{other}` "
                f"({delta:+.4f}; the target is within 0.01).",
            )
        artifact = Path(entry["artifact"]) if entry.get("artifact") else None
        parts.append(
            card(
                title=entry["title"],
                model=name,
                architecture=entry["architecture"],
                training=training_record(
                    Path(entry["run"]),
                    shared_cores=entry.get("shared_cores", ""),
                    epoch=entry.get("epoch"),
                ),
                report=report,
                artifact=artifact if artifact and artifact.is_file() else None,
                notes=notes,
                served_conf=_served_conf(name),
            )
        )
    return "\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--models-doc",
        type=Path,
        metavar="OUT.md",
        help="write every card of --cards into one document (the other options are then unused)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        metavar="README.md",
        help="rewrite the bundled-models paragraph of this README from the same records",
    )
    p.add_argument("--cards", type=Path, default=Path("docs/train/cards.json"))
    p.add_argument("--title")
    p.add_argument("--model", help="served ensemble name")
    p.add_argument("--architecture")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--train-record", type=Path, help="training facts (JSON)")
    src.add_argument("--train-run", type=Path, help="a run folder of bonefrac train")
    p.add_argument("--shared-cores", default="", help="say what else ran during training")
    p.add_argument("--eval", type=Path, help="bonefrac eval --json output")
    p.add_argument("--artifact", type=Path)
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.models_doc or args.readme:
        if args.models_doc:
            args.models_doc.write_text(models_doc(args.cards))
        if args.readme:
            args.readme.write_text(with_readme_models(args.readme.read_text(), args.cards))
        print(f"wrote {', '.join(str(p) for p in (args.models_doc, args.readme) if p)}")
        return
    missing = [
        f"--{k.replace('_', '-')}"
        for k in ("title", "model", "architecture", "eval", "out")
        if getattr(args, k) is None
    ]
    if missing or not (args.train_record or args.train_run):
        p.error("one card needs " + ", ".join(missing or ["--train-record or --train-run"]))
    report = json.loads(args.eval.read_text())
    if isinstance(report, list):  # a multi-model report: take this model's
        report = next(r for r in report if r["model"]["name"] == args.model)
    text = card(
        title=args.title,
        model=args.model,
        architecture=args.architecture,
        training=json.loads(args.train_record.read_text())
        if args.train_record
        else training_record(args.train_run, shared_cores=args.shared_cores),
        report=report,
        artifact=args.artifact,
        notes=args.note,
    )
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
