"""Client-side balancing over several Triton servers.

Round robin over the servers that are healthy; a server that fails with "unavailable",
"overloaded" or "model not found" (a server draining or still loading) is skipped for a
cool-down and the request moves on to the next one at once, so a request fails only when every
server does. Bad input is never retried elsewhere.

gRPC's own ``round_robin`` policy needs IP addresses (``ipv4:a:8001,b:8001``); this works with any
``host:port`` list, e.g. the pods behind a Kubernetes headless service.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

from bonefrac.client._errors import ModelNotFoundError, ServerUnavailableError
from bonefrac.client._grpc import (
    NO_RETRY,
    AsyncDetectionClient,
    DetectionClient,
    RetryPolicy,
    ServerStatus,
)
from bonefrac.detections import Detections

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


def _all_failed(last: Exception | None, n: int) -> Exception:
    """The error when every server failed: of the last one's kind (unavailable servers are
    retried with backoff, a model missing everywhere is not)."""
    kind = type(last) if last is not None else ServerUnavailableError
    return kind(f"all {n} servers failed; last: {last}")


class _Pool:
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

    def mark_down(self, i: int) -> None:
        with self.lock:
            self.down_until[i] = time.monotonic() + self.cooldown_s

    def mark_up(self, i: int) -> None:
        with self.lock:
            self.down_until[i] = 0.0
            self.sent[i] += 1


class BalancedDetectionClient:
    """:class:`DetectionClient` over several servers (same methods).

    Args:
        servers: ``"a:8001,b:8001"`` or a list of ``host:port``.
        model, timeout_s, ssl, root_certificates: as :class:`DetectionClient`.
        retry: retries after every server has failed once (waits with backoff in between).
        cooldown_s: how long a failed server is tried last.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        model: str = "yolo11",
        timeout_s: float = 30.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008
        cooldown_s: float = 2.0,
    ) -> None:
        self.urls = parse_servers(servers)
        self.url = ",".join(self.urls)
        self.model = model
        self.retry = retry
        self.clients = [
            DetectionClient(
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
        return dict(zip(self.urls, self._pool.sent))

    def _once(self, method: str, *args: Any, **kwargs: Any) -> Any:
        last: Exception | None = None
        for i in self._pool.order():
            try:
                result = getattr(self.clients[i], method)(*args, **kwargs)
            except _FAILOVER as exc:
                self._pool.mark_down(i)
                last = exc
                continue
            self._pool.mark_up(i)
            return result
        raise _all_failed(last, len(self.urls))

    def detect(
        self,
        data: bytes,
        *,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> Detections:
        """As :meth:`DetectionClient.detect`, on the next healthy server."""
        from bonefrac.client._grpc import _retry_sync

        return _retry_sync(
            self.retry,
            lambda: self._once(
                "detect", data, conf_threshold=conf_threshold, iou_threshold=iou_threshold
            ),
        )

    def model_parameters(self) -> dict[str, str]:
        return self._once("model_parameters")

    def status(self) -> ServerStatus:
        return self._once("status")

    def is_ready(self) -> bool:
        return any(c.is_ready() for c in self.clients)

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self) -> BalancedDetectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBalancedDetectionClient:
    """:class:`AsyncDetectionClient` over several servers (see :class:`BalancedDetectionClient`)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        model: str = "yolo11",
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008
        cooldown_s: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self.urls = parse_servers(servers)
        self.url = ",".join(self.urls)
        self.model = model
        self.retry = retry
        self.clients = [
            AsyncDetectionClient(u, model=model, timeout_s=timeout_s, retry=NO_RETRY, **kwargs)
            for u in self.urls
        ]
        self._pool = _Pool(len(self.clients), cooldown_s)

    @property
    def requests_per_server(self) -> dict[str, int]:
        return dict(zip(self.urls, self._pool.sent))

    async def _once(self, data: bytes, **kwargs: Any) -> Detections:
        last: Exception | None = None
        for i in self._pool.order():
            try:
                result = await self.clients[i].detect(data, **kwargs)
            except _FAILOVER as exc:
                self._pool.mark_down(i)
                last = exc
                continue
            self._pool.mark_up(i)
            return result
        raise _all_failed(last, len(self.urls))

    async def detect(
        self,
        data: bytes,
        *,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> Detections:
        from bonefrac.client._grpc import _retry_async

        return await _retry_async(
            self.retry,
            lambda: self._once(data, conf_threshold=conf_threshold, iou_threshold=iou_threshold),
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
