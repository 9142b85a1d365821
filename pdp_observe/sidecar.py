"""Wiring: settings → store writer, recorder, proxy listener, admin listener; and shutdown.

Kept apart from the CLI so tests (and later the demo) can run a real sidecar in-process
with an injected writer or sink, on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .admin import build_admin_app
from .config import Settings
from .hub import Recorder
from .metrics import ExchangeMetrics, RecorderCollector
from .pipeline import DecodeOperations
from .proxy import Proxy, serve
from .redact import Redactor
from .store import StoreWriter

log = logging.getLogger("pdp_observe")


@dataclass
class Sidecar:
    """A running sidecar. ``port``/``admin_port`` are the bound ports (useful with port 0)."""

    settings: Settings
    recorder: Recorder
    proxy: Proxy
    registry: CollectorRegistry
    port: int = 0
    admin_port: int | None = None
    _servers: list[Any] = field(default_factory=list)
    _admin_runner: web.AppRunner | None = None
    _reporter: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.time)

    def health(self) -> dict[str, Any]:
        r = self.recorder
        return {"status": "ok", "upstream": self.proxy.upstream, "listen": self.settings.listen,
                "db": self.settings.db, "stored": r.stored, "queue_depth": r.queue_depth,
                "in_flight": self.proxy.in_flight, "dropped": r.dropped(),
                "uptime_s": round(time.time() - self.started, 1)}

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except (asyncio.TimeoutError, TimeoutError):
                pass
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        await self.proxy.close()
        await asyncio.to_thread(self.recorder.stop)
        self._report_drops(final=True)

    def _report_drops(self, final: bool = False, last: dict[str, int] | None = None) -> dict[str, int]:
        dropped = self.recorder.dropped()
        if dropped and (final or dropped != last):
            total = sum(dropped.values())
            detail = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
            log.warning("captures dropped so far: %d (%s); traffic was not affected", total, detail)
        return dropped

    async def _report_loop(self, every: float) -> None:
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(every)
            last = self._report_drops(last=last)


async def start_sidecar(settings: Settings, *, writer: StoreWriter | None = None,
                        registry: CollectorRegistry | None = None, report_every: float = 10.0) -> Sidecar:
    """Open the store, start the worker and both listeners. Raises on bad settings/ports."""
    settings.validate()
    if writer is None:
        writer = await asyncio.to_thread(StoreWriter, settings.db)
    recorder = Recorder(
        writer, redactor=Redactor.with_extra(settings.redact_header, settings.redact_param),
        body_limit=settings.capture_body_limit, queue_max=settings.queue_max,
        queue_max_bytes=settings.queue_max_bytes, max_age=settings.max_age,
        max_db_size=settings.max_db_size,
    )
    registry = registry or CollectorRegistry()
    recorder.processors.append(DecodeOperations())
    recorder.sinks.append(ExchangeMetrics(registry))
    proxy = Proxy(settings.upstream, recorder, body_limit=settings.capture_body_limit,
                  preserve_host=settings.preserve_host, forwarded_headers=settings.forwarded_headers,
                  connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                  pool_size=settings.upstream_pool_size, rewrite_itx_endpoint=settings.rewrite_itx_endpoint)
    registry.register(RecorderCollector(recorder, lambda: proxy.in_flight))
    sc = Sidecar(settings, recorder, proxy, registry)
    recorder.start()
    try:
        host, port = settings.listen_addr
        srv, _ = await serve(proxy, host, port)
        sc._servers.append(srv)
        sc.port = srv.sockets[0].getsockname()[1]
        if (admin := settings.admin_addr) is not None:
            runner = web.AppRunner(build_admin_app(registry, sc.health), access_log=None)
            await runner.setup()
            sc._admin_runner = runner
            await web.TCPSite(runner, admin[0], admin[1]).start()
            sc.admin_port = runner.addresses[0][1]
    except BaseException:
        await sc.stop()
        raise
    sc._reporter = asyncio.ensure_future(sc._report_loop(report_every))
    return sc


def run(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; drains captures on the way out. Returns an exit code."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    async def main() -> int:
        sc = await start_sidecar(settings)
        log.info("pdp_observe forwarding %s -> %s, recording to %s%s", f"{settings.listen_addr[0]}:{sc.port}",
                 settings.upstream, settings.db,
                 f"; admin on :{sc.admin_port} (/healthz, /metrics)" if sc.admin_port else "")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: draining %d queued captures", sc.recorder.queue_depth)
        await sc.stop()
        log.info("stopped; %d exchanges stored this run", sc.recorder.stored)
        return 0

    return asyncio.run(main())
