"""Make Ultralytics safe to run offline: no font, weight or package downloads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def prepare_ultralytics_offline(*, threads: int | None = None) -> None:
    """Set the environment Ultralytics reads at import so it never reaches the network.

    Must run before ``import ultralytics``. Puts a TTF font where Ultralytics looks for
    ``Arial.ttf`` (it would otherwise download one) and sets torch's thread count, which
    Ultralytics lowers to ``cpu_count - 1``.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    config_dir = Path(
        os.environ.setdefault(
            "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "bonefrac-ultralytics")
        )
    )
    font_dir = config_dir / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    for font in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = font_dir / font
        if not target.exists():
            source = _any_ttf()
            if source is not None:
                target.write_bytes(source.read_bytes())
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _any_ttf() -> Path | None:
    try:
        import matplotlib

        candidate = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts"):
        for path in Path(folder).rglob("*.ttf") if Path(folder).is_dir() else ():
            return path
    return None
