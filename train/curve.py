"""Learning curves scored by the project's own evaluator.

A long training run leaves a snapshot folder (``docs/train/<run>/``: ``checkpoint.pt``,
``results.csv``). Every few epochs :func:`score_snapshot` exports the snapshot's checkpoint
through the one export path (``bonefrac.export``) into a scratch model repository, runs the
evaluator in-process on the valid split (the same pipeline the server runs; the tests check the
two agree) and appends one row to ``curve.csv``: epoch, cumulative training time, 6-class AP50,
AP50-95, sensitivity at 1 false positive per image. :func:`plot_curve` draws ``curve.png``.
"""

from __future__ import annotations

import csv
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a checkpoint on valid (6-class protocol, the published one)."""

    epoch: int
    train_hours: float
    ap50: float
    ap50_95: float
    sens_at_1fp: float
    scored_at: str


def read_curve(folder: str | Path) -> list[CurvePoint]:
    path = Path(folder) / CURVE_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            CurvePoint(
                epoch=int(r["epoch"]),
                train_hours=float(r["train_hours"]),
                ap50=float(r["ap50"]),
                ap50_95=float(r["ap50_95"]),
                sens_at_1fp=float(r["sens_at_1fp"]),
                scored_at=r["scored_at"],
            )
            for r in csv.DictReader(f)
        ]


#: A curve has flattened when its last three evaluations, each taken after at least 10 % more
#: epochs than the one before, lie within this AP50 of one another (issue #13's rule).
PLATEAU_AP50 = 0.005
PLATEAU_STEP = 1.10
_STEP_PCT = round((PLATEAU_STEP - 1) * 100)  # as the sentences say it


@dataclass(frozen=True)
class Plateau:
    """The last three evaluations of a curve spaced by at least ``PLATEAU_STEP`` in epochs."""

    points: tuple[CurvePoint, ...]
    spread: float  # max - min AP50 of the points
    hours: float  # training hours at the last point

    @property
    def flat(self) -> bool:
        return len(self.points) == 3 and self.spread <= PLATEAU_AP50

    def sentence(self) -> str:
        """The plain statement a card or report prints."""
        if len(self.points) < 3:
            return (
                f"learning curve: {self.hours:.1f} training hours, too few evaluations spaced "
                f"{_STEP_PCT} % apart in epochs to say whether it has flattened"
            )
        epochs = ", ".join(str(p.epoch) for p in self.points)
        values = ", ".join(f"{p.ap50:.4f}" for p in self.points)
        verdict = (
            f"flattened (within {PLATEAU_AP50})"
            if self.flat
            else f"still moving (> {PLATEAU_AP50})"
        )
        return (
            f"learning curve: {self.hours:.1f} training hours; valid AP50 after epochs {epochs} "
            f"(each at least {_STEP_PCT} % more epochs than the one before): {values}, spread "
            f"{self.spread:.4f}: {verdict}"
        )


def plateau(points: list[CurvePoint]) -> Plateau | None:
    """The last point and, going back, each latest point with at most 1/``PLATEAU_STEP`` of the
    epochs of the one chosen after it (three at most); None for an empty curve."""
    if not points:
        return None
    chosen = [max(points, key=lambda p: p.epoch)]
    while len(chosen) < 3:
        earlier = [p for p in points if p.epoch * PLATEAU_STEP <= chosen[-1].epoch + 1e-9]
        if not earlier:
            break
        chosen.append(max(earlier, key=lambda p: p.epoch))
    chosen.reverse()
    ap = [p.ap50 for p in chosen]
    return Plateau(tuple(chosen), max(ap) - min(ap), chosen[-1].train_hours)


def _append(folder: Path, point: CurvePoint) -> None:
    path = folder / CURVE_CSV
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[x.name for x in fields(CurvePoint)])
        if new:
            writer.writeheader()
        writer.writerow(asdict(point))


def cumulative_seconds(times: list[float]) -> list[float]:
    """Ultralytics' ``time`` column restarts from 0 in each resumed session: add the sessions
    up so that the curve's x axis is the run's whole training time."""
    total, offset, previous = [], 0.0, 0.0
    for t in times:
        if t < previous:
            offset += previous
        total.append(offset + t)
        previous = t
    return total


def checkpoint_epoch(checkpoint: Path) -> tuple[int, float]:
    """(epochs completed, training hours so far) of an Ultralytics checkpoint.

    A checkpoint stripped at the end of training (``best.pt``: epoch -1) holds the best epoch's
    weights: that epoch is the one of highest fitness (Ultralytics' 0.1 mAP50 + 0.9 mAP50-95)
    in its results, and its hours are the training time up to it.
    """
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    results = ckpt.get("train_results") or {}
    times = cumulative_seconds([float(t) for t in results.get("time") or [0.0]])
    epoch = int(ckpt.get("epoch", -1)) + 1
    if epoch == 0 and results.get("metrics/mAP50-95(B)"):
        fitness = [
            0.1 * float(a) + 0.9 * float(b)
            for a, b in zip(results["metrics/mAP50(B)"], results["metrics/mAP50-95(B)"])
        ]
        best = max(range(len(fitness)), key=fitness.__getitem__)
        return best + 1, times[best] / 3600.0
    return epoch, times[-1] / 3600.0


def frcnn_checkpoint_epoch(folder: Path) -> tuple[int, float]:
    """(epochs completed, training hours so far) of a Faster R-CNN snapshot: the checkpoint's
    epoch, and the sum of its log's epoch times up to it."""
    import torch

    from bonefrac.train.frcnn import SNAPSHOT_CHECKPOINT

    state = torch.load(folder / SNAPSHOT_CHECKPOINT, map_location="cpu", weights_only=True)
    epoch = int(state["epoch"]) + 1
    with (folder / "results.csv").open(newline="") as f:
        seconds = sum(float(r["epoch_s"]) for r in csv.DictReader(f) if int(r["epoch"]) <= epoch)
    return epoch, seconds / 3600.0


def snapshot_epoch(folder: Path) -> int | None:
    """Epochs completed by a snapshot (YOLO11 or Faster R-CNN, as its record says); None while
    it has no checkpoint yet."""
    from bonefrac.train.frcnn import SNAPSHOT_CHECKPOINT
    from bonefrac.train.resume import family

    if family(folder) == "yolo11":
        checkpoint = folder / "checkpoint.pt"
        return checkpoint_epoch(checkpoint)[0] if checkpoint.is_file() else None
    if not (folder / SNAPSHOT_CHECKPOINT).is_file():
        return None
    return frcnn_checkpoint_epoch(folder)[0]


def _export_snapshot(folder: Path, repo: str, *, data: str) -> tuple[str, int, float]:
    """Export a snapshot's checkpoint (YOLO11 or Faster R-CNN, as its record says) into
    ``repo``; returns the ensemble's name, the checkpoint's epoch and training hours."""
    from bonefrac.train import record_config
    from bonefrac.train.resume import family

    config = record_config(folder)
    if family(folder) == "yolo11":
        from bonefrac.export.yolo11 import export_yolo11

        export_yolo11(out=repo, weights=folder / "checkpoint.pt", imgsz=config["imgsz"])
        return ("yolo11", *checkpoint_epoch(folder / "checkpoint.pt"))
    from bonefrac.dataset import YoloDataset, make_protocol
    from bonefrac.export.frcnn import export_frcnn
    from bonefrac.train.frcnn import SNAPSHOT_CHECKPOINT

    export_frcnn(
        out=repo,
        class_names=make_protocol(config["protocol"], YoloDataset.from_yaml(data).names).names,
        weights=folder / SNAPSHOT_CHECKPOINT,
        arch=config["arch"],
        min_size=config["min_size"],
        max_size=config["max_size"],
    )
    return ("frcnn", *frcnn_checkpoint_epoch(folder))


def score_snapshot(folder: str | Path, *, data: str, limit: int | None = None) -> CurvePoint:
    """Export the snapshot's checkpoint (YOLO11 or Faster R-CNN) and score it on valid; append
    the point to curve.csv and redraw curve.png."""
    from bonefrac.client.evaluate import evaluate, in_process_model

    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="bonefrac-curve-") as repo:
        name, epoch, hours = _export_snapshot(folder, repo, data=data)
        report = evaluate(
            in_process_model(repo, name),
            data=data,
            split="valid",
            protocol="6class",
            cache_dir=None,
            progress=False,
            limit=limit,
        )
    point = CurvePoint(
        epoch=epoch,
        train_hours=round(hours, 3),
        ap50=round(report["ap50"], 5),
        ap50_95=round(report["ap50_95"], 5),
        sens_at_1fp=round(report["sens_at_1fp"], 5),
        scored_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _append(folder, point)
    plot_curve(folder)
    return point


def plot_curve(folder: str | Path, *, published_ap50: float | None = None) -> Path | None:
    """``curve.png``: valid AP50, AP50-95 and sensitivity at 1 FP/image against training hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    points = read_curve(folder)
    if not points:
        return None
    hours = [p.train_hours for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(hours, [p.ap50 for p in points], "o-", label="AP50")
    ax.plot(hours, [p.ap50_95 for p in points], "s-", label="AP50-95")
    ax.plot(hours, [p.sens_at_1fp for p in points], "^--", label="sensitivity @ 1 FP/image")
    if published_ap50 is not None:
        ax.axhline(published_ap50, color="grey", ls=":", label="published AP50 (pretrained)")
    for p in points:
        ax.annotate(
            f"e{p.epoch}",
            (p.train_hours, p.ap50),
            fontsize=7,
            xytext=(2, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("training time (hours, this machine)")
    ax.set_ylabel("valid, 6-class (bonefrac eval)")
    ax.set_title(f"{folder.name}: learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = folder / CURVE_PNG
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def watch(folder: str | Path, *, data: str, every: int, poll_s: float = 60.0) -> None:
    """Score the snapshot each time its epoch reaches a multiple of ``every`` (runs beside the
    training, until interrupted)."""
    folder = Path(folder)
    scored = {p.epoch for p in read_curve(folder)}
    while True:
        epoch = snapshot_epoch(folder)
        if epoch is not None and epoch % every == 0 and epoch not in scored:
            point = score_snapshot(folder, data=data)
            scored.add(point.epoch)
            print(
                f"epoch {point.epoch}: AP50 {point.ap50:.4f} AP50-95 {point.ap50_95:.4f} "
                f"sens@1FP {point.sens_at_1fp:.3f}",
                flush=True,
            )
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m bonefrac.train.curve",
        description="Score a training snapshot (docs/train/RUN: YOLO11 or Faster R-CNN) with "
        "bonefrac eval on "
        "the valid split and append the point to its curve.csv / curve.png; --every N keeps "
        "watching the snapshot and scores each N-th epoch.",
    )
    p.add_argument("snapshot", help="snapshot folder, e.g. docs/train/yolo11n-640")
    p.add_argument("--data", required=True, metavar="DATA.yaml", help="dataset yaml")
    p.add_argument("--every", type=int, metavar="N", help="watch; score every N-th epoch")
    args = p.parse_args(argv)
    if args.every:
        watch(args.snapshot, data=args.data, every=args.every)
        return 0
    point = score_snapshot(args.snapshot, data=args.data)
    print(f"epoch {point.epoch}: AP50 {point.ap50:.4f} AP50-95 {point.ap50_95:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
