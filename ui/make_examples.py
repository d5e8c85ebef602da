"""The page's example X-rays, chosen by a rule that does not look at the models: one per body
region, the first image of the dataset's valid split (by file name) labelled with that region.
Each ships with its label file, copied unchanged, so the page draws the truth beside the model.

    python -m bonefrac.ui.make_examples --data DATA.yaml    # rewrites ui/examples/
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bonefrac.dataset import Sample, YoloDataset

EXAMPLES_DIR = Path(__file__).parent / "examples"
SPLIT = "valid"
RULE = (
    "one per body region: the first image of the dataset's valid split, by file name, labelled "
    "with that region (whatever the models find on it)"
)


def region(class_name: str) -> str:
    """The body region of a dataset class: ``"wrist positive"`` -> ``"wrist"``."""
    return class_name.split()[0]


def pick_examples(dataset: YoloDataset) -> dict[str, Sample]:
    """Region -> the example the rule picks, in region order.

    Raises:
        DatasetError: the split is missing or a label is malformed.
    """
    picked: dict[str, Sample] = {}
    for sample in dataset.samples(SPLIT):
        for cid in sample.class_ids:
            picked.setdefault(region(dataset.names[int(cid)]), sample)
    return dict(sorted(picked.items()))


def credits_md(picked: dict[str, Sample]) -> str:
    """``CREDITS.md`` of the examples: the source, the licence, the rule and each original name."""
    rows = "".join(f"| {r}.jpg | {s.image.name} |\n" for r, s in picked.items())
    return (
        "# Example images\n\n"
        f"{len(picked)} images of the valid split of the Bone Fracture Detection dataset (Roboflow "
        "project\n`veda/bone-fracture-detection-daoon` v4, published on Kaggle as\n"
        "`pkdarabi/bone-fracture-detection-computer-vision-project`, DOI "
        "10.13140/RG.2.2.14400.34569),\nlicensed CC BY 4.0, copied unchanged with their YOLO label "
        "files (`NAME.txt`) and renamed by\nbody region.\n\n"
        f"The rule that picks them, {RULE}.\n\n"
        "Written by `python -m bonefrac.ui.make_examples --data DATA.yaml`.\n\n"
        "| file | original file name |\n| --- | --- |\n" + rows
    )


def write_examples(dataset: YoloDataset, folder: Path = EXAMPLES_DIR) -> list[Path]:
    """Replace the examples in ``folder`` by the ones the rule picks; returns the images."""
    picked = pick_examples(dataset)
    for old in [*folder.glob("*.jpg"), *folder.glob("*.txt")]:
        old.unlink()
    images = []
    for name, sample in picked.items():
        images.append(Path(shutil.copyfile(sample.image, folder / f"{name}.jpg")))
        shutil.copyfile(dataset.label_path(sample.image), folder / f"{name}.txt")
    (folder / "CREDITS.md").write_text(credits_md(picked))
    return images


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="DATA.yaml", help="the YOLO dataset")
    p.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="folder (default: ui/examples)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    for image in write_examples(YoloDataset.from_yaml(args.data), args.out):
        print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
