"""Typed gRPC clients (sync and asyncio) for bonefrac's detection ensembles on Triton."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from bonefrac.client._errors import ClientError, ServerUnavailableError, convert_error
from bonefrac.detections import Detections, Detector, Threshold
from bonefrac.spec import check_thresholds

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of requests that failed because the server was unavailable or overloaded
    (never of bad input).

    Attributes:
        attempts: tries in all (1: no retry).
        backoff_s: wait before the first retry; doubles each time, with +-50 % jitter.
        max_backoff_s: cap on one wait.
        deadline_s: give up when the next try would start later than this after the first
            (None: only ``attempts`` limits).
    """

    attempts: int = 4
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    deadline_s: float | None = 30.0

    def delays(self):
        """The waits before each retry."""
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            yield min(self.max_backoff_s, delay) * random.uniform(0.5, 1.5)
            delay *= 2


NO_RETRY = RetryPolicy(attempts=1)


class _Backoff:
    """The waits between one request's tries under a :class:`RetryPolicy`; the sync and the
    asyncio retry loops both ask it."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.deadline_s = policy.deadline_s
        self.start = time.monotonic()
        self.delays = policy.delays()

    def wait_after(self, exc: ServerUnavailableError) -> float:
        """The wait before the next try, in seconds.

        Raises:
            ServerUnavailableError: ``exc`` itself, when the policy allows no further try.
        """
        delay = next(self.delays, None)
        if delay is None or (
            self.deadline_s is not None and time.monotonic() - self.start + delay > self.deadline_s
        ):
            raise exc
        return delay


def _retry_sync(policy: RetryPolicy, call: Callable[[], T]) -> T:
    backoff = _Backoff(policy)
    while True:
        try:
            return call()
        except ServerUnavailableError as exc:
            time.sleep(backoff.wait_after(exc))


async def _retry_async(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    backoff = _Backoff(policy)
    while True:
        try:
            return await call()
        except ServerUnavailableError as exc:
            await asyncio.sleep(backoff.wait_after(exc))


_OUTPUTS = ("num_detections", "boxes", "scores", "class_ids", "class_names", "image_size")


@dataclass(frozen=True)
class ServerStatus:
    """What a server says about itself."""

    url: str
    live: bool
    ready: bool
    models: tuple[tuple[str, str, str], ...]  # (name, version, state)


def _build_request(
    module, data: bytes, conf_threshold: float | None, iou_threshold: float | None
) -> tuple[list, list]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be bytes, got {type(data).__name__}")
    image = module.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[bytes(data)]], dtype=np.object_))
    inputs = [image]
    for name, value in (("conf_threshold", conf_threshold), ("iou_threshold", iou_threshold)):
        if value is not None:
            tensor = module.InferInput(name, [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
            inputs.append(tensor)
    outputs = [module.InferRequestedOutput(name) for name in _OUTPUTS]
    return inputs, outputs


def _parse_response(result) -> Detections:
    n = int(result.as_numpy("num_detections").reshape(-1)[0])
    names = result.as_numpy("class_names").reshape(-1)[:n]
    height, width = (int(v) for v in result.as_numpy("image_size").reshape(-1)[:2])
    return Detections(
        xyxy=result.as_numpy("boxes").reshape(-1, 4)[:n],
        scores=result.as_numpy("scores").reshape(-1)[:n],
        class_ids=result.as_numpy("class_ids").reshape(-1)[:n],
        class_names=tuple(v.decode() if isinstance(v, bytes) else str(v) for v in names),
        image_size=(height, width),
    )


class _TritonClient:
    """What the sync and asyncio clients share: the options, the connection and the request of
    one image (arguments: see :class:`DetectionClient`)."""

    #: The tritonclient module of the transport: ``tritonclient.grpc`` or its ``aio``.
    _module: Any = grpcclient

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model: str = "yolo11",
        timeout_s: float = 30.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.retry = retry
        with self._converted_errors():
            self._client = self._module.InferenceServerClient(
                url=url, ssl=ssl, root_certificates=root_certificates
            )

    @contextlib.contextmanager
    def _converted_errors(self) -> Iterator[None]:
        """Turn tritonclient's exceptions into the client's own (:func:`convert_error`)."""
        try:
            yield
        except InferenceServerException as exc:
            raise convert_error(exc, url=self.url, model=self.model) from exc

    def _infer_arguments(
        self, data: bytes, conf_threshold: float | None, iou_threshold: float | None
    ) -> dict[str, Any]:
        """The arguments of ``infer`` for one image.

        Raises:
            ValueError: a threshold out of range.
            TypeError: ``data`` is not bytes.
        """
        check_thresholds(conf_threshold=conf_threshold, iou_threshold=iou_threshold)
        inputs, outputs = _build_request(self._module, data, conf_threshold, iou_threshold)
        return {
            "model_name": self.model,
            "inputs": inputs,
            "outputs": outputs,
            "client_timeout": self.timeout_s,
        }


class DetectionClient(_TritonClient, Detector):
    """Synchronous gRPC client of a bonefrac detection ensemble.

    One gRPC channel is opened per client and reused by every call; the client is safe to share
    between threads.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        model: the ensemble to call (``"yolo11"``).
        timeout_s: deadline of each inference, in seconds.
        ssl: use TLS; with ``root_certificates`` naming a PEM file to trust.
        retry: retries when the server is unavailable or overloaded (:class:`RetryPolicy`).

    Raises:
        ClientError: the client could not be created (e.g. an unreadable certificate).
    """

    def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """Detect fractures on one encoded image (JPEG, PNG, ...; see :meth:`Detector.detect`).

        Raises:
            ValueError: a threshold out of range.
            InvalidInputError: the server refused the image (the message says why).
            ServerUnavailableError: the server cannot be reached.
            RequestTimeoutError: no answer within ``timeout_s``.
            ClientError: any other failure.
        """
        arguments = self._infer_arguments(data, conf_threshold, iou_threshold)

        def call():
            with self._converted_errors():
                return self._client.infer(**arguments)

        return _parse_response(_retry_sync(self.retry, call))

    def is_ready(self) -> bool:
        """Whether the server and this client's model are ready (False when unreachable)."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except InferenceServerException:
            return False

    def status(self) -> ServerStatus:
        """Liveness, readiness and the models in the server's repository.

        Raises:
            ServerUnavailableError: the server cannot be reached.
        """
        with self._converted_errors():
            index = self._client.get_model_repository_index(as_json=True)
            return ServerStatus(
                url=self.url,
                live=bool(self._client.is_server_live()),
                ready=bool(self._client.is_server_ready()),
                models=tuple(
                    (m.get("name", ""), m.get("version", ""), m.get("state", ""))
                    for m in index.get("models", [])
                ),
            )

    def model_parameters(self) -> dict[str, str]:
        """The ``parameters`` of this client's model config (e.g. ``class_names``,
        ``model_sha256``).

        Raises:
            ClientError: the server cannot be reached or does not have the model.
        """
        with self._converted_errors():
            config = self._client.get_model_config(self.model, as_json=True).get("config", {})
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def wait_ready(self, *, timeout_s: float = 60.0, poll_s: float = 0.25) -> None:
        """Block until the model is ready.

        Raises:
            ServerUnavailableError: if it is not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            time.sleep(poll_s)
        raise ServerUnavailableError(
            f"model '{self.model}' at {self.url} was not ready after {timeout_s:.0f} s"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DetectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inference_statistics(self, model: str = "") -> dict:
        """Triton's cumulative inference statistics, as its JSON (``{"model_stats": [...]}``;
        times in nanoseconds) for ``model`` ("": every loaded model).

        Raises:
            ClientError: the server cannot be reached or does not have the model.
        """
        try:
            return self._client.get_inference_statistics(model_name=model, as_json=True)
        except InferenceServerException as exc:
            raise convert_error(exc, url=self.url, model=model or self.model) from exc


class AsyncDetectionClient(_TritonClient):
    """asyncio gRPC client of a bonefrac detection ensemble (same arguments as
    :class:`DetectionClient`). Create it inside a running event loop."""

    _module = grpcclient_aio

    async def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """As :meth:`DetectionClient.detect`."""
        arguments = self._infer_arguments(data, conf_threshold, iou_threshold)

        async def call():
            with self._converted_errors():
                return await self._client.infer(**arguments)

        return _parse_response(await _retry_async(self.retry, call))

    async def detect_many(
        self, images: Iterable[bytes], *, conf_threshold: float | None = None
    ) -> list[Detections | ClientError]:
        """Detect on many images concurrently; a failed image gives its error in its slot."""

        async def one(data: bytes) -> Detections | ClientError:
            try:
                return await self.detect(data, conf_threshold=conf_threshold)
            except ClientError as exc:
                return exc

        return list(await asyncio.gather(*(one(d) for d in images)))

    async def is_ready(self) -> bool:
        try:
            return bool(
                await self._client.is_server_ready()
                and await self._client.is_model_ready(self.model)
            )
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncDetectionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
