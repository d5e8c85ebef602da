"""Start and stop a real ``tritonserver`` on this machine, CPU or GPU.

The server binary and the Python backend come from the ``nvidia-pytriton`` wheel. Its Python
backend needs a stub built for the running Python's minor version, and the stub must import the
packages of this environment (bonefrac, numpy, onnxruntime): :class:`TritonServer` sets both up
in a private backend folder, waits for readiness with a timeout, and turns the usual start-up
failures into a diagnosis.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bonefrac.errors import ServerError

_SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"


@dataclass(frozen=True)
class GrpcTls:
    """TLS for Triton's gRPC endpoint (PEM files).

    Attributes:
        cert: the server certificate.
        key: its private key.
        root_cert: a CA to require client certificates from (mutual TLS); None: no client auth.
    """

    cert: Path
    key: Path
    root_cert: Path | None = None

    def args(self) -> list[str]:
        for path in (self.cert, self.key, self.root_cert):
            if path is not None and not Path(path).is_file():
                raise ServerError(f"TLS file {path} does not exist")
        out = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={self.cert}",
            f"--grpc-server-key={self.key}",
        ]
        if self.root_cert is not None:
            out += [f"--grpc-root-cert={self.root_cert}", "--grpc-use-ssl-mutual=true"]
        return out


@dataclass(frozen=True)
class TritonInstall:
    """Where the ``nvidia-pytriton`` wheel keeps the server and the Python backend."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path

    @classmethod
    def find(cls) -> TritonInstall:
        """Locate the server installed with ``nvidia-pytriton``.

        Raises:
            ServerError: if the wheel, the binary or a stub for this Python is missing.
        """
        try:
            import pytriton
        except ImportError:
            raise ServerError(
                "tritonserver is not installed: pip install nvidia-pytriton "
                "(a dependency of bonefrac; it ships the server binary)"
            ) from None
        root = Path(pytriton.__file__).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=root.parent.parent / "nvidia_pytriton.libs",
        )
        if not install.binary.is_file():
            raise ServerError(f"tritonserver binary not found at {install.binary}")
        if not install.stub.is_file():
            available = sorted(p.name for p in install.stub.parent.parent.iterdir())
            raise ServerError(
                f"no Python backend stub for Python {version} in nvidia-pytriton "
                f"(it has {', '.join(available)}): use one of those Python versions"
            )
        return install


#: gRPC address -> metrics URL of the servers this process started (see :func:`metrics_url_of`).
_STARTED: dict[str, str] = {}


def metrics_url_of(grpc_url: str) -> str | None:
    """The Prometheus metrics URL of the Triton server at ``grpc_url`` (``HOST:PORT``): that of a
    :class:`TritonServer` this process started there, else port 8002 for Triton's default gRPC
    port 8001; None when it cannot be known (give it then, e.g. ``bonefrac bench
    --metrics-url``)."""
    if grpc_url in _STARTED:
        return _STARTED[grpc_url]
    host, _, port = grpc_url.rpartition(":")
    return f"http://{host}:8002/metrics" if port == "8001" else None


def _metrics_text(metrics_url: str) -> str:
    """Triton's metrics page, or "" when it cannot be read."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:
            return answer.read().decode()
    except (OSError, ValueError):
        return ""


_STEP_METRIC = re.compile(r"^bonefrac_step_(duration_us|requests)\{([^}]*)\}\s+(\S+)", re.M)


def step_times(metrics_url: str, model: str) -> dict[str, tuple[int, int]]:
    """Cumulative per-step time of a one-model pipeline (``cpu_layout="single"``), from the
    counters it exposes on Triton's metrics port (``bonefrac_step_duration_us`` and
    ``bonefrac_step_requests``, labelled ``model`` and ``step``): step (``preprocess``,
    ``detector``, ``postprocess``) -> ``(requests, nanoseconds)``. Empty when the metrics
    cannot be read or ``model`` has none (an ensemble's steps have Triton's statistics)."""
    text = _metrics_text(metrics_url)
    found: dict[str, dict[str, float]] = {}
    for kind, labels, value in _STEP_METRIC.findall(text):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if named.get("model") == model:
            found.setdefault(named.get("step", ""), {})[kind] = float(value)
    return {
        step: (int(v.get("requests", 0)), int(v.get("duration_us", 0) * 1000))
        for step, v in found.items()
    }


_RUNS_METRIC = re.compile(r"^bonefrac_detector_runs\{([^}]*)\}\s+(\S+)", re.M)


def detector_runs(metrics_url: str, model: str) -> dict[int, int]:
    """Detector runs of a one-model pipeline by ONNX Runtime threads (the counter
    ``bonefrac_detector_runs`` on Triton's metrics port): threads -> runs. Empty when the metrics
    cannot be read or ``model`` has none."""
    text = _metrics_text(metrics_url)
    runs: dict[int, int] = {}
    for labels, value in _RUNS_METRIC.findall(text):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if named.get("model") == model:
            runs[int(named["threads"])] = int(float(value))
    return runs


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that are free on ``host`` right now (each socket stays bound
    until all are chosen, so the kernel cannot hand the same port out twice)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def group_stubs(group: int) -> list[int]:
    """Python-backend stubs running in a tritonserver's process group (the server runs in its
    own session, so the group is its pid). A SIGKILLed server cannot stop its stubs: they go on
    holding their memory, orphans, until someone stops them."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group or fields[0] == "Z":  # pgrp; a zombie is gone already
                continue
            if b"triton_python_backend_stub" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
    return found


def mapped_shm_regions() -> set[str]:
    """The Python-backend shared-memory files some live process has mapped."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        mapped.update(re.findall(r"(/dev/shm/triton_python_backend_shm_region_\S+)", text))
    return mapped


def diagnose(log: str) -> str:
    """A one-paragraph diagnosis of a tritonserver log that ended in failure."""
    checks = [
        (
            "triton_python_backend_stub is not found",
            "The Python backend stub is missing from the backend directory: start the server with "
            "'bonefrac serve', which installs the stub that matches this Python.",
        ),
        (
            "_recursion_count",
            "The stub loaded a different libpython than this environment's: put the environment's "
            "sysconfig LIBDIR first on LD_LIBRARY_PATH ('bonefrac serve' does this).",
        ),
        (
            "ModuleNotFoundError",
            "A Python model imports a package the stub's Python does not have: run the server from "
            "the environment where bonefrac is installed (its bin/ first on PATH).",
        ),
        (
            "Address already in use",
            "A port is already taken: choose others with --grpc-port/--http-port/--metrics-port.",
        ),
        (
            "failed to bind",
            "A port could not be bound: choose others with --grpc-port/--http-port/--metrics-port.",
        ),
        (
            "does not exist",
            "A file in the model repository is missing: export the model first (bonefrac export).",
        ),
        ("failed to load", "A model failed to load: the log lines above name it and say why."),
    ]
    found = [advice for needle, advice in checks if needle in log]
    return " ".join(found) if found else "See the log lines above."


def still_loading(log: str) -> list[str]:
    """The models a tritonserver log shows loading and not yet loaded or failed, in log order
    (``name:version``). While it loads models the server answers no endpoint, so its log is
    the only place that says what it is waiting for."""
    loading = re.findall(r'"loading: ([^":]+):(\d+)"', log)
    done = set(re.findall(r"(?:successfully loaded|failed to load) '([^']+)'", log))
    return [f"{name}:{version}" for name, version in dict.fromkeys(loading) if name not in done]


def _error_lines(log: str, *, limit: int = 25) -> str:
    lines = log.splitlines()
    picked = [ln for ln in lines if re.match(r"^[EW]\d{4}", ln) or "Error" in ln or "error" in ln]
    return "\n".join((picked or lines)[-limit:])


class TritonServer:
    """A tritonserver process bound to loopback by default.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        model_repository: the model repository folder.
        host: address for gRPC, HTTP and metrics (127.0.0.1 unless you mean otherwise).
        grpc_port: gRPC port (0: pick a free one).
        http_port: HTTP port (0: pick a free one).
        metrics_port: Prometheus metrics port (0: pick a free one).
        model_control: ``"none"`` (load everything) or ``"explicit"``.
        load_models: with ``"explicit"``, the models to load at start.
        startup_timeout_s: how long to wait for readiness.
        log_path: where the server log goes (a temporary file when None).
        log_verbose: tritonserver's ``--log-verbose`` level.
        tls: serve gRPC over TLS (HTTP and metrics stay plain; keep them on loopback).
        extra_args: further tritonserver arguments.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        model_control: str = "none",
        load_models: Sequence[str] = (),
        startup_timeout_s: float = 120.0,
        log_path: str | os.PathLike[str] | None = None,
        log_verbose: int = 0,
        tls: GrpcTls | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', got {model_control!r}")
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        spare = iter(free_ports(3, host))
        self.grpc_port = grpc_port or next(spare)
        self.http_port = http_port or next(spare)
        self.metrics_port = metrics_port or next(spare)
        self.model_control = model_control
        self.load_models = tuple(load_models)
        self.startup_timeout_s = startup_timeout_s
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self._workdir: Path | None = None
        self._log_path = Path(log_path) if log_path else None
        self._log_file = None
        self.process: subprocess.Popen[bytes] | None = None
        self._shm_before: set[str] = set()

    @classmethod
    def ephemeral(cls, model_repository: str | os.PathLike[str], **kwargs: Any) -> TritonServer:
        """A server on free loopback ports (gRPC, HTTP and metrics): for tests, benchmarks and
        any run that must not collide with another server on this host. ``kwargs`` are the
        other arguments of the constructor."""
        for key in ("grpc_port", "http_port", "metrics_port"):
            kwargs.setdefault(key, 0)
        return cls(model_repository, **kwargs)

    # -- addresses -----------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise ServerError("the server has not been started")
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_text(self) -> str:
        """The server log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, ServerError):
            return ""

    # -- life cycle ----------------------------------------------------------------------
    def command(self, backend_dir: Path) -> list[str]:
        install = TritonInstall.find()
        cmd = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            f"--log-verbose={self.log_verbose}",
            "--exit-timeout-secs=10",
        ]
        if self.model_control == "explicit":
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.load_models]
        if self.tls is not None:
            cmd += self.tls.args()
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        """The server's environment: this Python's ``bin`` first on PATH (the stub runs the
        first ``python3`` it finds to locate packages) and its libpython on LD_LIBRARY_PATH."""
        env = dict(os.environ)
        install = TritonInstall.find()
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        libs = [sysconfig.get_config_var("LIBDIR") or "", str(install.libs)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def _prepare_backends(self) -> Path:
        install = TritonInstall.find()
        self._workdir = Path(tempfile.mkdtemp(prefix="bonefrac-triton-"))
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True)
        for item in install.python_backend.iterdir():
            if item.is_file():
                (python_dir / item.name).symlink_to(item)
        shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
        return self._workdir / "backends"

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready.

        Raises:
            ServerError: if the repository is missing, the server exits, or it is not ready
                within ``startup_timeout_s``; the message holds the log's error lines and a
                diagnosis.
        """
        if self.process is not None:
            raise ServerError("this server is already started")
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} does not exist")
        backend_dir = self._prepare_backends()
        if self._log_path is None:
            self._log_path = self._workdir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._shm_before = set(glob.glob(_SHM_GLOB))
        self.process = subprocess.Popen(
            self.command(backend_dir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
        )
        try:
            self.wait_ready(timeout_s=self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        _STARTED[self.grpc_url] = self.metrics_url
        return self

    def is_ready(self) -> bool:
        """Whether the server answers ready on its HTTP health endpoint."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, *, timeout_s: float) -> None:
        """Poll readiness until ``timeout_s``.

        Raises:
            ServerError: if the process exits or the deadline passes.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.log_text()
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} during start-up.\n"
                    f"{_error_lines(log)}\nDiagnosis: {diagnose(log)}\nFull log: {self._log_path}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        log = self.log_text()
        hint = diagnose(log)
        if hint == "See the log lines above.":
            hint = (
                "The server is still loading models. A Python backend stub built for another "
                "Python version makes loading hang forever; check that the stub matches "
                f"Python {sys.version_info.major}.{sys.version_info.minor}."
            )
        pending = still_loading(log)
        waiting = f"Models not ready yet: {', '.join(pending)}.\n" if pending else ""
        raise ServerError(
            f"tritonserver was not ready after {timeout_s:.0f} s.\n{_error_lines(log)}\n"
            f"{waiting}Diagnosis: {hint}\nFull log: {self._log_path}"
        )

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``); returns its exit code.

        Also stops the Python-backend stubs the server left running (after a SIGKILL, here or by
        anyone, or a stub crash) and removes the shared-memory files that dead stubs left.
        """
        code = None
        killed = False
        group = self.process.pid if self.process is not None else None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                    killed = True
            code = self.process.returncode
            killed = killed or (code is not None and code < 0 and code != -signal.SIGTERM)
            self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if group is not None:
            # A SIGKILLed server leaves its stubs running; a stub the server lost track of (one
            # left over from a reload after a stub crash) outlives a clean stop by a second or
            # two. Stop them all, then remove the shared memory this server created that no
            # live process maps (another server's regions are mapped by its stubs): Triton
            # leaves a dead stub's region in /dev/shm.
            deadline = time.monotonic() + (0 if killed else 5)
            while group_stubs(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in group_stubs(group):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while group_stubs(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            created = set(glob.glob(_SHM_GLOB)) - self._shm_before
            for path in created - mapped_shm_regions() if created else ():
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if self._workdir is not None:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
