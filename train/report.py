"""``docs/train/README.md``: the training runs, their learning curves, the equal-time comparison
and the step-speed measurements, written from the committed records (never typed).

``python -m bonefrac.train.report --docs docs/train`` rewrites it; a test checks the committed
file equals what this makes from the records beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from bonefrac.train.curve import CURVE_PNG, cumulative_seconds, plateau, read_curve
from bonefrac.train.model_card import epochs_by_machine

DATA_CREDIT = (
    "Data: Bone Fracture Detection (Roboflow `veda/bone-fracture-detection-daoon` v4), CC BY 4.0 "
    "(`../shared/data/bone-fracture-yolo8/SOURCE.md`); train split for training, valid split "
    "for every figure here."
)
CHECKPOINTS_H = (0.5, 1, 2, 4, 8)  # equal-time comparison points, hours of training


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


def _records(folder: Path, key: str) -> tuple[list[dict[str, str]], dict[str, Any]] | None:
    """A run folder's ``results.csv`` rows and record, if its config has ``key`` (``imgsz``:
    YOLO11, ``arch``: Faster R-CNN)."""
    results = folder / "results.csv"
    record = folder / "bonefrac_train.json"
    if not results.is_file() or not record.is_file():
        return None
    data = json.loads(record.read_text())
    return (_rows(results), data) if key in data.get("config", {}) else None


def yolo_run(folder: Path) -> dict[str, Any] | None:
    """A YOLO11 run's record: config, epochs, hours, Ultralytics' own val mAP50 per epoch."""
    if not (found := _records(folder, "imgsz")):
        return None
    rows, record = found
    hours = [s / 3600 for s in cumulative_seconds([float(r["time"]) for r in rows])]
    machine = record.get("machine", {})
    return {
        "name": folder.name,
        "config": record["config"],
        "machine": machine.get("gpu") or epochs_by_machine(record, len(rows)),
        "gpu": bool(machine.get("gpu")),
        "epochs": [int(float(r["epoch"])) for r in rows],
        "hours": hours,
        "map50": [float(r["metrics/mAP50(B)"]) for r in rows],
        "curve": read_curve(folder),
    }


def frcnn_run(folder: Path) -> dict[str, Any] | None:
    """A Faster R-CNN run's record: config, epochs, hours and the trainer's own valid AP50."""
    if not (found := _records(folder, "arch")):
        return None
    rows, record = found
    seconds = [float(r["epoch_s"]) for r in rows]
    return {
        "name": folder.name,
        "machine": epochs_by_machine(record, len(rows)),
        "config": record["config"],
        "epochs": [int(r["epoch"]) for r in rows],
        "hours": [sum(seconds[: i + 1]) / 3600 for i in range(len(seconds))],
        "val_ap50": [float(r["val_ap50"]) for r in rows],
        "curve": read_curve(folder),
    }


def frcnn_section(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    lines = [
        "## Faster R-CNN runs",
        "",
        "| run | machine | architecture | norm | shorter side | epochs done / planned | "
        "training hours | valid AP50 (trainer's check), last | "
        "valid AP50 (bonefrac eval, 6-class), last |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        cfg = run["config"]
        check = f"{run['val_ap50'][-1]:.4f} ({cfg.get('val_limit') or 'all'} images)"
        lines.append(
            f"| {run['name']} | {run['machine']} | {cfg['arch']} | {cfg.get('norm', 'batch')} | "
            f"{cfg.get('min_size')} | {run['epochs'][-1]} / {cfg.get('epochs')} | "
            f"{_f(run['hours'][-1], 2)} | {check} | {_scored(run)} |"
        )
    return lines + [""]


def _scored(run: dict[str, Any]) -> str:
    """The run's last point of its learning curve (bonefrac eval), for a table cell."""
    last = run["curve"][-1] if run["curve"] else None
    return f"{last.ap50:.4f} (epoch {last.epoch})" if last else "not scored yet"


def map50_by(run: dict[str, Any], hours: float, key: str = "map50") -> float | None:
    """Best val mAP50 (``key``: the run's per-epoch validation) reached within ``hours`` of
    training (None if the run is shorter)."""
    if not run["hours"] or run["hours"][-1] < hours:
        return None
    reached = [m for h, m in zip(run["hours"], run[key]) if h <= hours]
    return max(reached) if reached else None  # None: no epoch had ended within the budget


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def runs_section(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| run | machine | model | image size | precision | epochs done / planned | "
        "training hours | val mAP50 (Ultralytics, 7-class), last | "
        "valid AP50 (bonefrac eval, 6-class), last |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        cfg = run["config"]
        planned = (
            f"fitted to {cfg['time_h'] * 60:.1f} min" if cfg.get("time_h") else cfg.get("epochs")
        )
        lines.append(
            f"| {run['name']} | {run['machine']} | {cfg.get('model', '?').removesuffix('.yaml')} | "
            f"{cfg.get('imgsz')} | {cfg.get('precision', 'float32')} | "
            f"{run['epochs'][-1]} / {planned} | {_f(run['hours'][-1], 2)} | "
            f"{_f(run['map50'][-1], 4)} | {_scored(run)} |"
        )
    return lines + [""]


def equal_time_section(runs: list[dict[str, Any]]) -> list[str]:
    header = " | ".join(f"{h:g} h" for h in CHECKPOINTS_H)
    lines = [
        "## At equal training time",
        "",
        "Best val mAP50 (Ultralytics' validation after each epoch, 7 classes) reached within each "
        "budget of training time on this 2-core CPU; – where the run has not trained that long "
        "or no epoch had ended by then. "
        "Pick by this slope, not by loss. Times are wall-clock, including whatever else ran on "
        "the machine: a run that shared the cores with other work is understated here (read it "
        "by epoch as well; the records say what ran beside each). Runs on a GPU are not in this "
        "table.",
        "",
        f"| run | {header} |",
        "| --- | " + " | ".join("---" for _ in CHECKPOINTS_H) + " |",
    ]
    for run in (r for r in runs if not r["gpu"]):
        cells = " | ".join(_f(map50_by(run, h), 4) for h in CHECKPOINTS_H)
        lines.append(f"| {run['name']} | {cells} |")
    return lines + [""]


def frcnn_equal_time_section(runs: list[dict[str, Any]]) -> list[str]:
    runs = [r for r in runs if r["config"].get("device", "cpu") == "cpu"]
    if not runs:
        return []
    header = " | ".join(f"{h:g} h" for h in CHECKPOINTS_H)
    lines = [
        "### Faster R-CNN",
        "",
        "Best valid AP50 of the trainer's own check after each epoch (PyTorch, 7 classes, the "
        "first `val_limit` valid images) within each budget, as above. The schedule column "
        "matters: a run planned for fewer epochs decays its learning rate sooner.",
        "",
        f"| run | norm | schedule (epochs) | {header} |",
        "| --- | --- | --- | " + " | ".join("---" for _ in CHECKPOINTS_H) + " |",
    ]
    for run in runs:
        cfg = run["config"]
        cells = " | ".join(_f(map50_by(run, h, "val_ap50"), 4) for h in CHECKPOINTS_H)
        lines.append(f"| {run['name']} | {cfg.get('norm', 'batch')} | {cfg['epochs']} | {cells} |")
    return lines + [""]


def curves_section(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Learning curves (bonefrac eval, valid, 6-class)",
        "",
        "Every few epochs the run's snapshot is exported through `bonefrac export` and scored "
        "in-process by `bonefrac eval` (the pipeline the server runs) on the 348 valid images: "
        "`python -m bonefrac.train.curve` (see below). `curve.csv` is the record.",
        "",
    ]
    for run in runs:
        if not run["curve"]:
            continue
        lines += [
            f"### {run['name']}",
            "",
            "| epoch | training hours | AP50 | AP50-95 | sensitivity @ 1 FP/image |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p.epoch} | {p.train_hours:.2f} | {p.ap50:.4f} | {p.ap50_95:.4f} | "
            f"{p.sens_at_1fp:.3f} |"
            for p in run["curve"]
        ]
        said = plateau(run["curve"]).sentence()
        lines += ["", f"{said[0].upper()}{said[1:]}.", ""]
        lines += [f"![{run['name']}]({run['name']}/{CURVE_PNG})", ""]
    return lines


def _speed_record(path: Path) -> dict[str, Any] | None:
    """A record of ``python -m bonefrac.train.speed``, if there is one."""
    return json.loads(path.read_text()) if path.is_file() else None


def speed_section(docs: Path) -> list[str]:
    """YOLO11 step costs: ``speed.json``, then the other machines' records (``speed-*.json``
    other than Faster R-CNN's), each a table of its own."""
    paths = [docs / "speed.json"] + [
        p for p in sorted(docs.glob("speed-*.json")) if not p.name.startswith("speed-frcnn")
    ]
    records = [(p, rec) for p in paths if (rec := _speed_record(p))]
    if not records:
        return []
    lines = ["## What a training step costs (s/image/epoch)", ""]
    for path, rec in records:
        steps = rec["steps"]
        base = steps.get("yolo11n 640px float32", next(iter(steps.values())))
        if path.name != "speed.json":
            lines += [f"### On {rec['machine'].get('cpu', 'another CPU')}: `{path.name}`", ""]
        lines += [
            f"`{rec['command']}` on {rec['machine']['cpus']} cores of "
            f"{rec['machine'].get('cpu', 'an unrecorded CPU')}, {rec['date']}, torch "
            f"{rec['torch']}, {rec['threads']} threads, batch {rec['batch']}, median of "
            f"{rec['rounds']} interleaved rounds (load average "
            f"{rec['machine']['load_avg_start']:.1f} at start, "
            f"{rec['machine']['load_avg_end']:.1f} at end: compare ratios, not absolute times).",
            "",
            *_steps_table(steps, "yolo11n 640 px float32", base),
            "",
            "| image size | JPEG decode + letterbox, ms/image | from the RAM cache, ms/image |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {row['imgsz']} | {row['decode_s_per_image'] * 1000:.1f} | "
            f"{row['cached_s_per_image'] * 1000:.2f} |"
            for row in rec["loading"]
        ]
        lines.append("")
    return lines


def _steps_table(steps: dict[str, dict], base_label: str, base: dict) -> list[str]:
    """A speed record's steps: seconds per image, the ratio to the ``base`` step's, and the
    range of that ratio round by round (how far the machine's noise moves it)."""
    return [
        f"| variant | s/image (step) | relative to {base_label} | per round, lowest-highest |",
        "| --- | --- | --- | --- |",
        *(
            f"| {label} | {row['s_per_image']:.4f} | "
            f"{row['s_per_image'] / base['s_per_image']:.2f}x | {_round_range(row, base)} |"
            for label, row in steps.items()
        ),
    ]


def _round_range(row: dict, base: dict) -> str:
    """Lowest and highest ratio of a step to the base step measured in the same round."""
    ratios = [s / b for s, b in zip(row.get("samples", []), base.get("samples", []))]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "–"


def frcnn_speed_section(docs: Path) -> list[str]:
    """One table per Faster R-CNN speed record (``speed-frcnn*.json``: one per kind of CPU
    measured, since bfloat16 depends on it)."""
    records = [_speed_record(path) for path in sorted(docs.glob("speed-frcnn*.json"))]
    if not records:
        return []
    return ["### Faster R-CNN", "", *(ln for rec in records for ln in _frcnn_speed_table(rec))]


def _frcnn_speed_table(rec: dict[str, Any]) -> list[str]:
    steps = rec["steps"]
    base = next(iter(steps.values()))
    lines = [
        f"`{rec['command']}`: the step of run `{rec['run']}` (its loader, augmentation, batch "
        f"{rec['batch']}, `train_step`) on {rec['machine']['cpus']} cores of "
        f"{rec['machine'].get('cpu', 'an unrecorded CPU')}, {rec['date']}, torch {rec['torch']}, "
        f"{rec['threads']} threads, median of {rec['rounds']} interleaved rounds (load average "
        f"{rec['machine']['load_avg_start']:.1f} at start, {rec['machine']['load_avg_end']:.1f} "
        "at end). bfloat16 autocast depends on the CPU: where it has no bfloat16 instructions, "
        "PyTorch falls back to slow convolution and matrix kernels.",
        "",
        *_steps_table(steps, next(iter(steps)), base),
    ]
    return lines + [""]


RESUME = """## Resume, on this machine or a new one

Each long run mirrors its checkpoint into its folder here after every epoch: YOLO11's
`checkpoint.pt` (weights, optimizer state, epoch and schedule) with `results.csv` and
`args.yaml`; Faster R-CNN's `checkpoint.pth` (FP16 weights, epoch and schedule; no optimizer
state, which would make it 150 MB: a resume restarts the SGD momentum) with `results.csv` and
the record. Commit the folder once before a session ends (not every epoch: each commit of a
checkpoint adds its whole size to the submission). A new machine resumes from it (the run folder
under `runs/` is rebuilt from the snapshot):

```bash
make train        # resumes the long runs of TRAIN_RUNS in the background (nice), logs in runs/
make train-curve  # scores the newest snapshots with bonefrac eval, updates curve.csv/png
```

A run whose curve still rises at the end of its schedule goes on past it:
`python -m bonefrac.train.resume docs/train/RUN --epochs N` (then `make train` keeps the new
length; the record's `resumes` say when the schedule changed, and whether the SGD momentum
restarted because the checkpoint had none).

`make train` resumes with `--precision auto`: bfloat16 on a GPU or a CPU with bfloat16
instructions, float32 elsewhere, whatever the run trained in before (the record's `resumes`
say which epochs ran in which). Where the CPU lacks them, torch emulates bfloat16 several times
slower than float32 (`speed-avx2.json` above). It also preloads tcmalloc (Debian's
`libtcmalloc-minimal4`, which it installs): glibc's malloc maps and unmaps a step's large
tensors every time, and the page faults cost a step 1.65x its time (`speed-avx2-malloc.json`).
It keeps PyTorch's default memory layout: NHWC weights (`channels_last`, which Ultralytics uses
on CUDA only) moved a YOLO11n step by less than this machine's noise from round to round
(`speed-avx2-layout.json`).

A run on a GPU node: `bash train/gpu_run.sh DATA.yaml OUT_DIR BUDGET_S` trains YOLO11n and
Faster R-CNN side by side, each schedule fitted to the budget, and leaves the weights and records
in OUT_DIR; `bonefrac.train.yolo11.import_run` brings a finished YOLO run into a folder here.
`RESUME=docs/train/RUN bash train/gpu_run.sh DATA.yaml OUT_DIR BUDGET_S` moves a long run onto
the GPU instead (`python -m bonefrac.train.resume RUN --device cuda --workers 8 --data ...`) and
packs its advanced snapshot: `cat OUT_DIR/snapshot.tar.part-* | tar -x -C docs/train`.
"""


def render(docs: str | Path) -> str:
    docs = Path(docs)
    folders = [f for f in sorted(docs.iterdir()) if f.is_dir()]
    runs = [r for f in folders if (r := yolo_run(f))]
    frcnn_runs = [r for f in folders if (r := frcnn_run(f))]
    lines = [
        "# Training runs",
        "",
        "Written by `python -m bonefrac.train.report --docs docs/train` from the records in "
        "this folder; do not edit by hand.",
        "",
        DATA_CREDIT,
        "",
        *runs_section(runs),
        *frcnn_section(frcnn_runs),
        *equal_time_section(runs),
        *frcnn_equal_time_section(frcnn_runs),
        *curves_section(runs + frcnn_runs),
        *speed_section(docs),
        *frcnn_speed_section(docs),
        RESUME,
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bonefrac.train.report", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--docs", default="docs/train", help="records folder (default: %(default)s)")
    args = p.parse_args(argv)
    out = Path(args.docs) / "README.md"
    out.write_text(render(args.docs))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
