"""Resume long training runs from their committed snapshots, one after another.

``python -m bonefrac.train.resume docs/train/RUN [docs/train/RUN ...]`` (what ``make train``
runs): each folder holds a run's record (``bonefrac_train.json``) and checkpoint; the record
says which trainer it belongs to (YOLO11 or Faster R-CNN), and the run goes on with the
configuration it was started with. A new machine rebuilds the run folder under ``runs/`` from
the snapshot. What may differ on another machine can be given: ``--device cuda --workers 8``
moves a Faster R-CNN run onto a GPU node (``RESUME=docs/train/RUN bash train/gpu_run.sh``), and
``--data`` points at the dataset where that machine keeps it; ``--precision auto`` (what
``make train`` asks for) trains in bfloat16 where the machine runs it fast and in float32 where
it does not (each resume records the precision it used); ``--epochs N`` extends a schedule
(also one that has ended: its curve was still rising).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bonefrac.train import TrainError, record_config
from bonefrac.train.speed import best_precision


def family(folder: str | Path) -> str:
    """``frcnn`` or ``yolo11``: the trainer a snapshot's record belongs to.

    Raises:
        TrainError: the folder holds no training record.
    """
    return "frcnn" if "arch" in record_config(folder) else "yolo11"


def resume(folder: str | Path, **overrides) -> Path:
    """Resume one snapshot's run to the end of its schedule; returns its best checkpoint.

    ``overrides``: ``device``, ``workers``, ``threads``, ``data``, ``precision``, ``epochs``
    (None keeps the record's).
    """
    if family(folder) == "frcnn":
        from bonefrac.train.frcnn import resume_snapshot
    else:
        from bonefrac.train.yolo11 import resume_snapshot
    return resume_snapshot(folder, **overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bonefrac.train.resume", description=__doc__)
    p.add_argument("snapshots", nargs="+", help="snapshot folders, e.g. docs/train/RUN")
    p.add_argument(
        "--device", help="cpu, cuda or cuda:N (Faster R-CNN), 0 (YOLO11); default: the record's"
    )
    p.add_argument(
        "--workers", type=int, help="data-loader worker processes; default: the record's"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads; default: the record's")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "auto"),
        help="default: the record's; auto: bfloat16 where this machine runs it fast (a GPU, a CPU "
        "with bfloat16 instructions), float32 elsewhere",
    )
    p.add_argument("--data", help="the dataset's data.yaml on this machine; default: the record's")
    p.add_argument(
        "--epochs",
        type=int,
        help="a new length of the schedule (a run whose curve is still rising goes on past its "
        "plan; the learning rate follows the new schedule from the next epoch); default: the "
        "record's",
    )
    args = p.parse_args(argv)
    keys = ("device", "workers", "threads", "precision", "data", "epochs")
    overrides = {k: getattr(args, k) for k in keys}
    for folder in args.snapshots:
        try:
            if args.precision == "auto":
                device = args.device or record_config(folder).get("device")
                overrides["precision"] = best_precision(device)
                print(f"{folder}: training in {overrides['precision']} on this machine", flush=True)
            print(f"best checkpoint: {resume(folder, **overrides)}", flush=True)
        except TrainError as exc:
            print(f"bonefrac train: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
