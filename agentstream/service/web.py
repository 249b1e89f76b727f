"""The worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/health`` (ready), ``/live``,
and ``/keys/{key}`` (what the worker holds for a key, read-only: :mod:`.keys`).

``/health`` answers 200 ``ready`` once the worker's state is recovered, and 503 while it
recovers, after it failed, or while the broker has not answered for longer than
``broker_unreachable_grace_s`` (``{"status": "broker-unreachable", "reason": ...}``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agentstream.observability.metrics import METRICS_CONTENT_TYPE, render
from agentstream.service.keys import key_view
from agentstream.service.worker import Worker


def _dumps(body: object) -> str:
    return json.dumps(body, ensure_ascii=False, default=repr)


__all__ = ["WebServer"]


class WebServer:
    """Serves a worker's metrics and health on ``host:port``."""

    def __init__(self, worker: Worker, host: str, port: int):
        self._worker = worker
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/live", self._live)
        app.router.add_get("/keys/{key}", self._key)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render(self._worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _key(self, request: web.Request) -> web.Response:
        if self._worker.error is not None or not self._worker.ready.is_set():
            return web.json_response({"error": "the worker is not ready"}, status=503)
        status, body = await key_view(self._worker, request.match_info["key"])
        return web.json_response(body, status=status, dumps=_dumps)

    async def _live(self, request: web.Request) -> web.Response:
        """Liveness: the process serves and has not failed (recovery may be under way)."""
        if self._worker.error is not None:
            return web.json_response({"status": "failed"}, status=503)
        return web.json_response({"status": "alive"}, status=200)

    async def _health(self, request: web.Request) -> web.Response:
        worker = self._worker
        if worker.error is not None:
            return web.json_response({"status": "failed", "error": str(worker.error)}, status=503)
        if not worker.ready.is_set():
            recovering = {
                "status": "recovering",
                "partitions": worker.recovery_progress(),
                "migration": worker.migration_progress(),
            }
            return web.json_response(recovering, status=503)
        unreachable = worker.broker_unreachable()
        if unreachable is not None:
            return web.json_response(
                {"status": "broker-unreachable", "reason": unreachable}, status=503
            )
        body: dict[str, Any] = {
            "status": "ready",
            "busy_keys": worker.operator.busy_keys(),
            "migration": worker.migration_progress(),
        }
        return web.json_response(body, status=200)
