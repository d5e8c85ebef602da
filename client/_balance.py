"""Client-side balancing over several Triton servers.

Round robin over the servers that are healthy; a server that fails with "unavailable",
"overloaded" or "model not found" (a server draining or still loading) is skipped for a
cool-down and the request moves on to the next one at once, so a request fails only when every
server does. Bad input is never retried elsewhere.

gRPC's own ``round_robin`` policy needs IP addresses (``ipv4:a:8001,b:8001``); this works with any
``host:port`` list, e.g. the pods behind a Kubernetes headless service.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from bonefrac.client._errors import ModelNotFoundError, ServerUnavailableError
from bonefrac.client._grpc import (
    NO_RETRY,
    AsyncDetectionClient,
    DetectionClient,
    RetryPolicy,
    ServerStatus,
    _retry_async,
    _retry_sync,
)
from bonefrac.detections import Detections, Detector, Threshold

T = TypeVar("T")
ClientT = TypeVar("ClientT", DetectionClient, AsyncDetectionClient)

#: Failures that move a request to the next server: unreachable, overloaded, or not (yet / any
#: more) serving the model, as during a rollout or a graceful shutdown that unloads models first.
_FAILOVER = (ServerUnavailableError, ModelNotFoundError)


def parse_servers(servers: str | Sequence[str]) -> list[str]:
    """``"a:8001,b:8001"`` or a list -> ``["a:8001", "b:8001"]``.

    Raises:
        ValueError: if no address is given or one has no port.
    """
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    urls = [s.strip() for s in items if s.strip()]
    if not urls:
        raise ValueError("give at least one server address HOST:PORT")
    bad = [u for u in urls if ":" not in u]
    if bad:
        raise ValueError(f"server addresses need a port (HOST:PORT): {bad}")
    return urls


def _all_failed(failures: list[Exception], n: int) -> Exception:
    """The error when every server failed: of the last one's kind (unavailable servers are
    retried with backoff, a model missing everywhere is not)."""
    last = failures[-1] if failures else None
    kind = type(last) if last is not None else ServerUnavailableError
    return kind(f"all {n} servers failed; last: {last}")


class _Pool:
    """The health of the servers behind one balanced client, and the order to try them in."""

    def __init__(self, n: int, cooldown_s: float) -> None:
        self.n = n
        self.cooldown_s = cooldown_s
        self.down_until = [0.0] * n
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.sent = [0] * n

    def order(self) -> list[int]:
        """Endpoints to try for one request: healthy ones in round-robin order, then the ones
        cooling down (they may be back)."""
        start = next(self.counter) % self.n
        ring = [(start + k) % self.n for k in range(self.n)]
        now = time.monotonic()
        healthy = [i for i in ring if self.down_until[i] <= now]
        return healthy + [i for i in ring if self.down_until[i] > now]

    @contextlib.contextmanager
    def trying(self, i: int, failures: list[Exception]) -> Iterator[None]:
        """One try on endpoint ``i``, the body of the failover loop that the sync and asyncio
        clients share: success marks the endpoint up; a failover error (:data:`_FAILOVER`)
        marks it down for ``cooldown_s``, is added to ``failures`` and is swallowed so that the
        loop moves on to the next endpoint; any other error propagates."""
        try:
            yield
        except _FAILOVER as exc:
            with self.lock:
                self.down_until[i] = time.monotonic() + self.cooldown_s
            failures.append(exc)
            return
        with self.lock:
            self.down_until[i] = 0.0
            self.sent[i] += 1


class _Balanced(Generic[ClientT]):
    """What the sync and asyncio balanced clients share: one client per server and the pool
    (arguments: see :class:`BalancedDetectionClient`)."""

    _client_class: type

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        model: str = "yolo11",
        timeout_s: float = 30.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        cooldown_s: float = 2.0,
    ) -> None:
        self.urls = parse_servers(servers)
        self.url = ",".join(self.urls)
        self.model = model
        self.retry = retry
        self.clients: list[ClientT] = [
            self._client_class(
                u,
                model=model,
                timeout_s=timeout_s,
                ssl=ssl,
                root_certificates=root_certificates,
                retry=NO_RETRY,
            )
            for u in self.urls
        ]
        self._pool = _Pool(len(self.clients), cooldown_s)

    @property
    def requests_per_server(self) -> dict[str, int]:
        """Requests each server answered, by address."""
        return dict(zip(self.urls, self._pool.sent))


class BalancedDetectionClient(_Balanced[DetectionClient], Detector):
    """:class:`DetectionClient` over several servers (same methods).

    Args:
        servers: ``"a:8001,b:8001"`` or a list of ``host:port``.
        model, timeout_s, ssl, root_certificates: as :class:`DetectionClient`.
        retry: retries after every server has failed once (waits with backoff in between).
        cooldown_s: how long a failed server is tried last.
    """

    _client_class = DetectionClient

    def _first_success(self, call: Callable[[DetectionClient], T]) -> T:
        failures: list[Exception] = []
        for i in self._pool.order():
            with self._pool.trying(i, failures):
                return call(self.clients[i])
        raise _all_failed(failures, len(self.urls))

    def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """As :meth:`DetectionClient.detect`, on the next healthy server."""
        return _retry_sync(
            self.retry,
            lambda: self._first_success(
                lambda c: c.detect(data, conf_threshold=conf_threshold, iou_threshold=iou_threshold)
            ),
        )

    def model_parameters(self) -> dict[str, str]:
        return self._first_success(DetectionClient.model_parameters)

    def status(self) -> ServerStatus:
        return self._first_success(DetectionClient.status)

    def is_ready(self) -> bool:
        return any(c.is_ready() for c in self.clients)

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self) -> BalancedDetectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBalancedDetectionClient(_Balanced[AsyncDetectionClient]):
    """:class:`AsyncDetectionClient` over several servers (see :class:`BalancedDetectionClient`)."""

    _client_class = AsyncDetectionClient

    async def _first_success(self, call: Callable[[AsyncDetectionClient], Awaitable[T]]) -> T:
        failures: list[Exception] = []
        for i in self._pool.order():
            with self._pool.trying(i, failures):
                return await call(self.clients[i])
        raise _all_failed(failures, len(self.urls))

    async def detect(
        self, data: bytes, *, conf_threshold: Threshold = None, iou_threshold: Threshold = None
    ) -> Detections:
        """As :meth:`AsyncDetectionClient.detect`, on the next healthy server."""
        return await _retry_async(
            self.retry,
            lambda: self._first_success(
                lambda c: c.detect(data, conf_threshold=conf_threshold, iou_threshold=iou_threshold)
            ),
        )

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def connect(servers: str | Sequence[str], **kwargs: Any):
    """A :class:`DetectionClient` for one address, a :class:`BalancedDetectionClient` for
    several (``"a:8001,b:8001"``)."""
    urls = parse_servers(servers)
    if len(urls) == 1:
        return DetectionClient(urls[0], **kwargs)
    return BalancedDetectionClient(urls, **kwargs)


def connect_async(servers: str | Sequence[str], **kwargs: Any):
    """The asyncio counterpart of :func:`connect`."""
    urls = parse_servers(servers)
    if len(urls) == 1:
        return AsyncDetectionClient(urls[0], **kwargs)
    return AsyncBalancedDetectionClient(urls, **kwargs)
