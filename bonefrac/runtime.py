"""ONNX Runtime execution on the CPU (the in-process pipeline is in :mod:`bonefrac.pipeline`)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bonefrac.errors import ModelRepositoryError


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: ONNX Runtime's graph optimisation levels by name.
OPT_LEVELS = ("disable", "basic", "extended", "all")


def session_options(
    *, threads: int = 0, spin: bool = True, spin_after_run: bool = True, opt_level: str = "all"
):
    """The ONNX Runtime session options every bonefrac session uses (the detector, the profiler).

    Args:
        threads: intra-op threads; 0 lets ONNX Runtime choose (one per core).
        spin: let idle intra-op threads spin-wait for work.
        spin_after_run: with ``spin``, let them go on spinning after a run ends (ONNX Runtime's
            default; here, measured, for about 40 ms); False stops them when the run ends.
        opt_level: one of :data:`OPT_LEVELS` (``all``: with the CPU's NCHWc layouts).

    Raises:
        ValueError: an unknown optimisation level.
    """
    import onnxruntime as ort

    levels = dict(
        zip(
            OPT_LEVELS,
            (
                ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            ),
        )
    )
    if opt_level not in levels:
        raise ValueError(f"opt_level must be one of {', '.join(OPT_LEVELS)}, got {opt_level!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin and not spin_after_run:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.graph_optimization_level = levels[opt_level]
    return options


class OnnxDetector:
    """An ONNX detector run by ONNX Runtime on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; 0 lets ONNX Runtime choose (one per core).
        spin: let idle intra-op threads spin-wait for work (ONNX Runtime's default: lowest
            latency for one session alone; off, several sessions share the cores better).
        spin_after_run: see :func:`session_options`.

    Raises:
        ModelRepositoryError: if the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int = 0,
        spin: bool = True,
        spin_after_run: bool = True,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelRepositoryError(
                f"ONNX file {path} does not exist: run 'bonefrac export' to build it"
            )
        self.threads = threads
        options = session_options(threads=threads, spin=spin, spin_after_run=spin_after_run)
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelRepositoryError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def check_input(self, array: np.ndarray) -> None:
        """Check a batch before running it.

        Raises:
            ValueError: if ``array`` is not finite float32 ``(batch, 3, H, W)``.
        """
        if array.dtype != np.float32:
            raise ValueError(f"input '{self.input.name}' must be FP32, got {array.dtype}")
        if array.ndim != 4 or array.shape[1] != 3 or min(array.shape) < 1:
            raise ValueError(
                f"input '{self.input.name}' must have shape (batch, 3, height, width), "
                f"got {tuple(array.shape)}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"input '{self.input.name}' holds NaN or infinite values")
        for axis, dim in zip((2, 3), self.input.shape[2:]):
            if isinstance(dim, int) and array.shape[axis] != dim:
                raise ValueError(
                    f"input '{self.input.name}' must be {dim} pixels along axis {axis}, "
                    f"got {array.shape[axis]}"
                )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(batch, 3, H, W)`` float32 -> the first output, e.g. YOLO's ``(batch, 4 + nc, A)``."""
        return self.session.run(self.output_names[:1], {self.input.name: batch})[0]


class CoreGate:
    """Who may take every core: the pipeline runs of one server (all instances of its one-model
    pipelines, each a separate stub process) share a lock on one directory (the model
    repository), so a run can tell whether it is alone.

    A run holds the lock shared while it is in progress (:meth:`running`); its detector step asks
    :meth:`alone`, which upgrades to exclusive only when no other run held the lock when this run
    started and none holds it now. An exclusive holder makes the others wait for it at the start
    of their run, so a lone request gets both cores without sharing them and, under load, every
    run keeps to its own thread. Both checks count: under load another instance is between two
    of its runs for a fraction of a millisecond at a time, and a run that met such a gap at its
    start finds the other running again by its detector step; only a request that meets no other
    run at either point goes alone.

    Args:
        directory: the directory whose lock the runs share (Linux ``flock``; nothing is written).

    Raises:
        OSError: the directory cannot be opened or locked exclusively here (e.g. a network file
            system that locks only files opened for writing).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._fd = os.open(directory, os.O_RDONLY)
        self._exclusive = False
        self._started_alone = False
        try:  # the locks this gate takes must work here
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BlockingIOError:
            pass  # held by another run: locking works
        except OSError:
            self.close()
            raise

    @contextmanager
    def running(self) -> Iterator[CoreGate]:
        """Hold the lock shared for one run, noting whether any other run held it then."""
        try:  # exclusive at once only if no other run holds the lock
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._started_alone = True
        except BlockingIOError:
            self._started_alone = False
        fcntl.flock(self._fd, fcntl.LOCK_SH)  # from exclusive: shared at once
        try:
            yield self
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._exclusive = False

    def alone(self) -> bool:
        """Whether no other run was in progress when this one started, nor is now; if so, this
        run holds the lock exclusively until it ends (or :meth:`share`)."""
        if not self._started_alone:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Linux drops the shared lock before it tries the upgrade: take it back.
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return False
        self._exclusive = True
        return True

    def share(self) -> None:
        """Back to shared after an exclusive step, so waiting runs may start."""
        if self._exclusive:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self._exclusive = False

    def close(self) -> None:
        """Release the lock and the directory."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
