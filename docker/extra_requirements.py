"""Print the requirements of one extra of an installed distribution, one per line.

NVIDIA's tritonserver image gets bonefrac with ``pip install --no-deps`` (its base dependencies
bring a second tritonserver and ONNX Runtime, which the image does not need) and then exactly the
``[triton]`` extra, read here from the installed package's metadata so the list lives only in
pyproject.toml:

    python3 docker/extra_requirements.py bonefrac triton > requirements.txt

Standard library only (the image's Python may be 3.10: no tomllib).
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, requires

_EXTRA = re.compile(r"""^\s*extra\s*==\s*["']([^"']+)["']\s*$""")


def extra_requirements(distribution: str, extra: str) -> list[str]:
    """The requirement strings of ``distribution[extra]``, markers of the extra removed.

    Raises:
        ValueError: the distribution is not installed or has no such extra.
    """
    try:
        declared = requires(distribution) or []
    except PackageNotFoundError:
        raise ValueError(f"{distribution} is not installed (pip install --no-deps .)") from None
    found, extras = [], set()
    for line in declared:
        requirement, _, marker = line.partition(";")
        match = _EXTRA.match(marker)
        if match:
            extras.add(match.group(1))
            if match.group(1) == extra:
                found.append(requirement.strip())
    if not found:
        raise ValueError(
            f"{distribution} has no extra '{extra}' (it has: {', '.join(sorted(extras)) or 'none'})"
        )
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: extra_requirements.py DISTRIBUTION EXTRA", file=sys.stderr)
        return 2
    try:
        print("\n".join(extra_requirements(*argv)))
    except ValueError as exc:
        print(f"extra_requirements: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
