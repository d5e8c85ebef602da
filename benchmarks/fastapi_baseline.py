"""The common alternative to Triton, for comparison: a plain FastAPI + ONNX Runtime HTTP server
running bonefrac's own pipeline (same decode, letterbox, ONNX file and NMS).

Run: ``python -m bonefrac.benchmarks.fastapi_baseline --repository DIR --model yolo11 --port N``
(uvicorn, one worker, loopback). ``POST /detect`` with the image bytes as the body.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request  # module level: FastAPI resolves annotations


def create_app(repository: str, model: str, *, threads: int = 0) -> FastAPI:
    from bonefrac.pipeline import InProcessPipeline
    from bonefrac.processing import ImageDecodeError

    pipeline = InProcessPipeline(repository, model, threads=threads)
    app = FastAPI(title="bonefrac FastAPI baseline")

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/detect")
    async def detect(request: Request) -> dict:
        data = await request.body()
        try:
            # FastAPI runs sync work in its thread pool; ONNX Runtime releases the GIL.
            from starlette.concurrency import run_in_threadpool

            det = await run_in_threadpool(pipeline.detect, data)
        except ImageDecodeError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {
            "height": det.image_size[0],
            "width": det.image_size[1],
            "detections": det.to_records(),
        }

    return app


class FastApiServer:
    """The baseline server in a subprocess on a free loopback port."""

    def __init__(self, repository: str, model: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bonefrac.benchmarks.fastapi_baseline",
                "--repository",
                repository,
                "--model",
                model,
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FastAPI baseline exited: {self.process.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("FastAPI baseline did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def http_target(url: str) -> tuple[Callable, Callable]:
    """An asyncio target posting image bytes to ``url/detect``, and a closer."""
    import aiohttp

    session: list[aiohttp.ClientSession] = []

    async def target(payload: bytes) -> None:
        if not session:
            session.append(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256),
                    timeout=aiohttp.ClientTimeout(total=120),
                )
            )
        async with session[0].post(f"{url}/detect", data=payload) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
            await response.read()

    async def close() -> None:
        if session:
            await session[0].close()

    return target, close


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--model", default="yolo11")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.repository, args.model, threads=args.threads),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
