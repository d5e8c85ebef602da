"""The ``bonefrac`` command line: every command's help, the one error boundary (a bonefrac error
is one line and an exit code, never a traceback), and ``bonefrac bench`` checking its options
before it starts anything."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import psutil
import pytest

from bonefrac.cli import get_args_parser, main

#: Every baseline ``bonefrac bench --baseline`` takes (written out, not imported: the message
#: must name these).
BASELINES = ("in-process", "fastapi", "ultralytics", "perf_analyzer")


def _bonefrac(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(argv prefix, parser) of every command and subcommand, depth first."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


def _one_line_error(result: subprocess.CompletedProcess, prefix: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


# -- help ------------------------------------------------------------------------------------


def test_every_command_has_help_with_a_description_and_its_defaults(capsys):
    commands = _commands(get_args_parser())
    names = {" ".join(path) for path, _ in commands}
    assert {"serve", "infer", "eval", "bench", "soak", "export yolo11", "train yolo11"} <= names
    assert len(commands) >= 20
    for path, parser in commands:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0, path
        text = " ".join(capsys.readouterr().out.split())
        assert text.startswith(f"usage: bonefrac {' '.join(path)}".strip()), path
        assert parser.description and len(parser.description) > 20, path
        for action in parser._actions:
            shown = action.option_strings and action.default not in (None, False, "", [])
            if shown and action.default is not argparse.SUPPRESS:
                assert f"default: {action.default}" in text, (path, action.dest)


def test_top_level_help_lists_every_command():
    result = _bonefrac("--help", timeout_s=120)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "infer", "export", "train", "eval", "data", "ui", "demo", "soak"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), command
    assert re.search(r"^\s+bench\s+\S", result.stdout, re.M)


def test_every_export_profile_is_explained():
    from bonefrac.export.cli import PROFILE_MEANINGS
    from bonefrac.export.triton_config import PROFILES

    assert list(PROFILE_MEANINGS) == list(PROFILES)


# -- the error boundary ----------------------------------------------------------------------


def test_a_bonefrac_error_is_one_line_and_exit_code_1(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    for args, prefix, says in (
        (("data", "summary", missing), "bonefrac data: ", "missing.yaml does not exist"),
        (("eval", "--data", missing, "--in-process", "--no-cache"), "bonefrac eval: ", missing),
        (
            ("export", "threshold", "--repository", str(tmp_path), "--model", "m", "--conf", "2"),
            "bonefrac export: ",
            "lies in [0, 1]",
        ),
    ):
        result = _bonefrac(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert says in _one_line_error(result, prefix), args


def test_an_os_error_is_one_line_and_exit_code_1(data_dir, tmp_path):
    """Writing where there is no folder: the error names the path, no traceback."""
    out = tmp_path / "no-such-folder" / "valid.json"
    result = _bonefrac("data", "to-coco", str(data_dir / "data.yaml"), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(out) in _one_line_error(result, "bonefrac data: ")


def test_bad_paths_and_options_are_exit_code_2(tmp_path):
    result = _bonefrac("infer", str(tmp_path / "nowhere.jpg"), "--no-progress")
    assert result.returncode == 2
    assert "nowhere.jpg: no such file or folder" in _one_line_error(result, "bonefrac infer: ")
    empty = _bonefrac("infer", str(tmp_path), "--no-progress")
    assert empty.returncode == 2
    assert "no image files" in _one_line_error(empty, "bonefrac infer: ")
    conf = _bonefrac("infer", str(tmp_path), "--conf", "1.5")
    assert conf.returncode == 2 and "--conf" in conf.stderr and "Traceback" not in conf.stderr


def test_serve_refuses_tls_files_that_are_not_there(tmp_path):
    """--grpc-tls-* reach tritonserver: a certificate that is not there is an error before
    anything starts (it used to be ignored, and the server served plain gRPC)."""
    ports = ("--grpc-port", "0", "--http-port", "0", "--metrics-port", "0")
    cert, key = str(tmp_path / "server.pem"), str(tmp_path / "server.key")
    result = _bonefrac(
        "serve", *ports, "--grpc-tls-cert", cert, "--grpc-tls-key", key, timeout_s=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "server.pem does not exist" in _one_line_error(result, "bonefrac serve: ")
    half = _bonefrac("serve", *ports, "--grpc-tls-cert", cert, timeout_s=120)
    assert half.returncode == 2
    assert "--grpc-tls-key" in _one_line_error(half, "bonefrac serve: ")


@pytest.mark.server
def test_serve_prints_its_addresses_serves_and_stops_on_ctrl_c(repository, tmp_path):
    import queue
    import signal
    import threading

    from bonefrac.client import DetectionClient

    log = tmp_path / "tritonserver.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonefrac.cli", "serve", "--repository", str(repository)]
        + ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
        + ["--startup-timeout-s", "400", "--log-file", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        seen = []
        while not seen or "Press Ctrl-C" not in seen[-1]:
            seen.append(lines.get(timeout=450))
        addresses = dict(line.split(None, 1) for line in seen if line.startswith("  "))
        assert addresses["log"].strip() == str(log)
        with DetectionClient(addresses["gRPC"].strip(), timeout_s=60) as client:
            assert client.is_ready()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    rest = "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert "tritonserver stopped" in rest, rest


# -- bench: options checked before anything starts --------------------------------------------


@pytest.fixture
def no_children_left():
    """Fails the test if the command left a child process (e.g. the FastAPI baseline) running,
    and stops any it left."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    commands = [" ".join(p.cmdline()) for p in left]
    for p in left:
        p.kill()
    assert not left, commands


def test_bench_refuses_fastapi_with_tensor_input_before_starting_it(
    data_dir, tmp_path, capsys, no_children_left
):
    out = tmp_path / "bench"
    code = main(
        ["bench", "--server", "127.0.0.1:9", "--images", str(data_dir / "valid" / "images")]
        + ["--baseline", "fastapi", "--input", "shm", "--out", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == "bonefrac bench: baselines take encoded images (drop --input)"
    assert not out.exists()


def test_bench_unknown_baseline_names_every_baseline(data_dir, capsys, no_children_left):
    code = main(
        ["bench", "--server", "127.0.0.1:9", "--images", str(data_dir / "valid" / "images")]
        + ["--baseline", "fastapi,nope"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown baseline(s) ['nope']" in err
    for name in BASELINES:
        assert name in err.split("known:")[1], name


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--concurrency", "1,two"), "--concurrency takes comma-separated ints"),
        (("--rate", ","), "give at least one --concurrency or --rate level"),
        (("--baseline", "ultralytics"), "the ultralytics baseline needs --weights PATH.pt"),
        (
            ("--baseline", "perf_analyzer", "--rate", "5"),
            "runs at --concurrency levels, not --rate",
        ),
        (("--images", "/nonexistent/images"), "/nonexistent/images: no such file or folder"),
    ],
)
def test_bench_bad_options_are_exit_code_2(data_dir, capsys, extra, message):
    images = str(data_dir / "valid" / "images")
    assert main(["bench", "--server", "127.0.0.1:9", "--images", images, *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.server
def test_unstable_measurements_are_results_not_failures(triton, data_dir, tmp_path):
    """Windows that never agree (0 % tolerance), ours and perf_analyzer's, are reported as
    stable: false, and the command succeeds."""
    out = tmp_path / "bench"
    result = _bonefrac(
        "bench",
        "--server",
        triton.grpc_url,
        "--images",
        str(data_dir / "valid" / "images"),
        "--concurrency",
        "1",
        "--duration-s",
        "1",
        "--warmup-s",
        "0.3",
        "--max-windows",
        "2",
        "--stability-pct",
        "0",
        "--baseline",
        "perf_analyzer",
        "--out",
        str(out),
        timeout_s=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert [r["target"] for r in runs] == ["triton", "perf_analyzer"], runs
    assert runs[0]["errors"] == 0 and runs[0]["requests"] > 0 and runs[0]["windows"] == 2
    assert all(r["stable"] is False for r in runs), runs
    assert runs[1]["throughput_rps"] > 0, runs
    assert "triton concurrency 1: " in result.stdout and "(unstable)" in result.stdout
