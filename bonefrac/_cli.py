"""Plumbing shared by every ``bonefrac`` subcommand: option groups and one error boundary.

Each subcommand module declares only the options that are its own. The ones several commands
take (the Triton server list, the model repository, the model, score thresholds, the dataset,
output files) are declared here once, with one help text and one default. :func:`subcommand`
makes a command's parser (defaults are shown in ``--help`` by :class:`HelpFormatter`) and
:func:`run` calls the command inside the error boundary: a
:class:`~bonefrac.errors.BonefracError`, an ``OSError`` or an error type the command names as
the user's becomes one line ``bonefrac COMMAND: message`` on stderr and an exit code (1, or 2
for a :class:`UsageError`, as argparse gives for bad options), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from bonefrac.dataset import PROTOCOLS
from bonefrac.errors import BonefracError

#: Where a Triton server answers gRPC unless ``--server`` says otherwise.
DEFAULT_SERVER = "127.0.0.1:8001"
#: The model repository folder unless ``--repository`` says otherwise.
DEFAULT_REPOSITORY = "model_repository"
#: Faster R-CNN architectures the trainer and the exporter build.
FRCNN_ARCHS = ("mobilenet_v3_fpn", "r50_fpn_v2")

Command = Callable[[argparse.Namespace], "int | None"]
T = TypeVar("T")


class CommandError(BonefracError):
    """A command cannot do what it was asked (exit code 1); the message says why."""

    exit_code = 1


class UsageError(CommandError):
    """The options do not fit together or name nothing usable (exit code 2, argparse's)."""

    exit_code = 2


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, adding ``(default: X)`` to every option that has a default worth
    showing (not None, False or empty; 0 is shown) and whose help does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.help == argparse.SUPPRESS
            or "default" in text
            or not action.option_strings
            or action.default is None
            or action.default is False
            or action.default in ("", [], argparse.SUPPRESS)
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


# -- commands and the error boundary -------------------------------------------------------


def subcommand(
    subparsers: argparse._SubParsersAction,
    name: str,
    func: Command | None = None,
    *,
    doc: str | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> argparse.ArgumentParser:
    """A command's parser. ``func(args)`` runs it; its docstring (or ``doc``, e.g. the module's
    for a command that only holds subcommands) is the command's help: the summary line in the
    list of commands, the paragraphs after it (up to a ``Returns:`` or ``Raises:`` section) as
    its description. ``errors`` are exception types (beyond bonefrac's and ``OSError``) that
    ``func`` raises for bad input and that :func:`run` reports as a message with exit code 1."""
    summary, description = describe(doc if doc is not None else (func.__doc__ or ""))
    parser = subparsers.add_parser(
        name, help=summary, description=description, formatter_class=HelpFormatter
    )
    if func is not None:
        parser.set_defaults(func=func, user_errors=errors)
    return parser


def describe(doc: str) -> tuple[str, str]:
    """(summary, description) of a docstring: its first paragraph without the final period,
    and the paragraphs after it up to the first section (the summary when there are none)."""
    lines = inspect.cleandoc(doc).splitlines()
    sections = ("Args:", "Returns:", "Raises:")
    end = next((i for i, line in enumerate(lines) if line.strip() in sections), len(lines))
    paragraphs = [" ".join(p.split()) for p in "\n".join(lines[:end]).split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    summary = paragraphs[0].removesuffix(".") if paragraphs else ""
    return summary, "\n\n".join(paragraphs[1:]) or summary


#: Optional modules (each the name of its distribution too) and the extra (pyproject.toml) that
#: installs each; the benchmark commands name their own extra for any of them.
EXTRA_OF_MODULE = {
    "gradio": "ui",
    "pycocotools": "eval",
    "matplotlib": "eval",
    "pydicom": "dicom",
    "fastapi": "bench",
    "uvicorn": "bench",
    "aiohttp": "bench",
    "psutil": "bench",
    "torch": "export",
    "torchvision": "export",
    "ultralytics": "export",
    "onnx": "export",
    "onnxslim": "export",
}


def missing_extra(args: argparse.Namespace, exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` misses (None: not an optional module)."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is not None and getattr(args, "command", None) in ("bench", "soak"):
        return "bench"
    return extra


def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` was parsed for; the one error boundary of the ``bonefrac`` CLI.

    Returns:
        The command's exit code; for a caught error 1 (or its ``exit_code``), 130 on Ctrl-C.
    """
    caught = (BonefracError, OSError, *getattr(args, "user_errors", ()))
    try:
        return int(args.func(args) or 0)
    except caught as exc:
        print(f"{prog(args)}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except ModuleNotFoundError as exc:  # an extra that is not installed: say which
        extra = missing_extra(args, exc)
        if extra is None:
            raise
        print(
            f"{prog(args)}: {exc}: this command needs the [{extra}] extra: "
            f"pip install 'bonefrac[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{prog(args)}: interrupted", file=sys.stderr)
        return 130


def prog(args: argparse.Namespace) -> str:
    """``bonefrac COMMAND``: how messages of the command ``args`` was parsed for begin."""
    command = getattr(args, "command", None)
    return f"bonefrac {command}" if command else "bonefrac"


@contextmanager
def usage_errors(*types: type[Exception]) -> Iterator[None]:
    """Inside, errors of ``types`` are the user's (a path that is not there, a server that does
    not answer): they leave as :class:`UsageError` (exit code 2)."""
    try:
        yield
    except types as exc:
        raise UsageError(str(exc)) from exc


# -- option values ---------------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``: the items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_list(text: str, kind: Callable[[str], T], *, option: str) -> list[T]:
    """The items of a comma-separated option as ``kind``.

    Raises:
        UsageError: naming the option and the item that is not a ``kind``.
    """
    try:
        return [kind(item) for item in split_list(text)]
    except ValueError as exc:
        raise UsageError(f"{option} takes comma-separated {kind.__name__}s: {exc}") from exc


def score(text: str) -> float:
    """argparse type of a score threshold: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def iou(text: str) -> float:
    """argparse type of an IoU threshold: a number in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value}")
    return value


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` filled from the options of the same names (the others keep their
    defaults)."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


# -- shared option groups --------------------------------------------------------------------


def add_server(p: argparse.ArgumentParser) -> None:
    """``--server``: the Triton gRPC address list."""
    p.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        metavar="HOST:PORT[,HOST:PORT]",
        help="Triton gRPC address(es); several are balanced round robin, skipping "
        "unhealthy ones (loopback or your own test hosts for load)",
    )


def add_repository(
    p: argparse.ArgumentParser,
    help: str = "Triton model repository",
) -> None:
    """``--repository``: a model repository folder."""
    p.add_argument("--repository", default=DEFAULT_REPOSITORY, metavar="DIR", help=help)


def add_model(
    p: argparse.ArgumentParser,
    help: str = "ensemble",
    *,
    default: str | None = "yolo11",
    **kwargs: Any,
) -> None:
    """``--model``: the ensemble (or ensembles) a command works on."""
    p.add_argument("--model", default=default, help=help, **kwargs)


def add_data(
    p: argparse.ArgumentParser | argparse._ActionsContainer,
    help: str = "dataset yaml",
    *,
    required: bool = True,
) -> None:
    """``--data``: a YOLO-format dataset yaml."""
    p.add_argument("--data", required=required, metavar="DATA.yaml", help=help)


def add_thresholds(p: argparse.ArgumentParser) -> None:
    """``--conf`` and ``--iou``: per-request score and NMS thresholds (the model's by default)."""
    p.add_argument(
        "--conf", type=score, metavar="T", help="minimum score, 0-1 (default: the model's, 0.25)"
    )
    p.add_argument(
        "--iou", type=iou, metavar="T", help="NMS IoU threshold, 0-1 (default: the model's, 0.7)"
    )


def add_protocol(
    p: argparse.ArgumentParser,
    default: str,
    help: str,
) -> None:
    """``--protocol``: the class protocol."""
    p.add_argument("--protocol", default=default, choices=PROTOCOLS, help=help)


def add_frcnn_geometry(p: argparse.ArgumentParser) -> None:
    """``--arch``, ``--min-size``, ``--max-size``: the Faster R-CNN's build and resize."""
    p.add_argument(
        "--arch",
        default=FRCNN_ARCHS[0],
        choices=FRCNN_ARCHS,
        help="mobilenet_v3_fpn for CPU speed, r50_fpn_v2 for accuracy",
    )
    p.add_argument("--min-size", type=int, default=512, help="resize: shorter side")
    p.add_argument("--max-size", type=int, default=640, help="resize: cap on the longer side")


def add_ports(p: argparse.ArgumentParser) -> None:
    """``--grpc-port``, ``--http-port``, ``--metrics-port``: tritonserver's fixed ports."""
    for name, port, what in (("grpc", 8001, "gRPC"), ("http", 8000, "HTTP")):
        p.add_argument(f"--{name}-port", type=int, default=port, help=f"Triton {what} port")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")


def server_from_args(args: argparse.Namespace, **kwargs: Any):
    """The :class:`~bonefrac.server.TritonServer` on ``--repository`` and the :func:`add_ports`
    ports; ``kwargs`` are its other arguments."""
    from bonefrac.server import TritonServer

    ports = {f"{name}_port": getattr(args, f"{name}_port") for name in ("grpc", "http", "metrics")}
    return TritonServer(args.repository, **ports, **kwargs)


def add_json(p: argparse.ArgumentParser, help: str) -> None:
    """``--json OUT``: where a command writes its result as JSON."""
    p.add_argument("--json", metavar="OUT", help=help)


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_in_process(p: argparse.ArgumentParser) -> None:
    """``--in-process`` and its ``--repository``: the pipeline here instead of a server."""
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the pipeline here with ONNX Runtime instead of calling a server",
    )
    add_repository(p, "model repository for --in-process")


def add_images(p: argparse.ArgumentParser) -> None:
    """``--images DIR``: the X-rays a load test sends."""
    p.add_argument("--images", required=True, metavar="DIR", help="X-rays to send")


def add_choice(
    p: argparse.ArgumentParser,
    flag: str,
    meanings: dict[str, str],
    *,
    default: str | None = None,
    required: bool = False,
) -> None:
    """An option that takes one of the keys of ``meanings`` (value -> what it does); the help
    explains each."""
    text = "; ".join(f"{value}: {meaning}" for value, meaning in meanings.items())
    p.add_argument(flag, choices=tuple(meanings), default=default, required=required, help=text)
