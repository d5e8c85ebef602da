"""The README's folder table names every module of every package folder, so a newcomer finds
each part where the README says it is."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("bonefrac", "client", "export", "train", "benchmarks", "ui")


def _row(readme: str, folder: str) -> str:
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{folder}/`")]
    assert len(rows) == 1, f"the README's folder table has no single row for {folder}/"
    return rows[0]


def test_readme_folder_table_names_every_module():
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"{folder}/{path.name}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).glob("*.py"))
        if path.name != "__init__.py" and f"`{path.name}`" not in _row(readme, folder)
    ]
    assert not missing, "add these to the README's folder table: " + ", ".join(missing)
