"""Wiring: settings → proxy listener + recorder (inline thread or its own process); shutdown.

Kept apart from the CLI so tests (and the demo) can run a real sidecar in-process with an
injected writer or sink, on an ephemeral port. ``--recorder process`` (the CLI default) runs
the recorder and the admin listener in a child process fed through :mod:`pdp_observe.link`;
``inline`` keeps both in this process (what tests that inject a store use).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from .config import Settings
from .hub import Recorder
from .link import RecorderLink
from .proxy import Proxy, serve
from .recording import RecordingSide, build_recording
from .store import StoreWriter

log = logging.getLogger("pdp_observe")


def _grow_pipe(transport: Any, size: int = 1 << 20) -> None:
    """Linux pipes hold 64 KiB; a 1 MiB buffer takes a large capture in one write (best effort)."""
    try:
        import fcntl  # noqa: PLC0415

        fd = transport.get_extra_info("pipe").fileno()
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, AttributeError, ValueError):
        pass


class RecorderChild:
    """The recorder process, seen from the proxy: spawn, feed, respawn if it dies, stop."""

    def __init__(self, settings: Settings, link: RecorderLink, proxy: Proxy) -> None:
        self.settings = settings
        self.link = link
        self.in_flight = lambda: proxy.in_flight
        self.active = proxy.in_flight_list
        self.high_water = lambda: proxy.high_water
        self.proc: asyncio.subprocess.Process | None = None
        self.admin_port: int | None = None
        self.restarts = 0
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reported: dict[str, int] = {}

    async def start(self) -> None:
        await self._spawn()
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._stats_loop())]

    async def _spawn(self) -> None:
        env = {**os.environ, "PDP_RECORDER_CONFIG": json.dumps(dataclasses.asdict(self.settings))}
        self.proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pdp_observe.recorder_process", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            ready = json.loads(line)
        except (asyncio.TimeoutError, ValueError) as exc:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"the recorder process did not start (exit {proc.returncode}): {exc!r}") from None
        self.admin_port = ready.get("admin_port")
        _grow_pipe(proc.stdin.transport)
        self.link.transport = proc.stdin.transport  # type: ignore[assignment]

    async def _watch(self) -> None:
        while True:
            assert self.proc is not None
            code = await self.proc.wait()
            self.link.transport = None
            if self._stopping:
                return
            self.restarts += 1
            log.error("the recorder process exited (code %s); captures are dropped (counted as "
                      "recorder_down) until it is back; restarting", code)
            await asyncio.sleep(min(5.0, 0.5 * self.restarts))
            try:
                await self._spawn()
            except Exception as exc:  # noqa: BLE001 - keep forwarding; try again later
                log.error("restarting the recorder failed: %s", exc)

    async def _stats_loop(self, every: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every)
            self.send_stats()

    def send_stats(self) -> None:
        if self.link.transport is None:
            return  # deltas wait until a recorder can count them
        now = dict(self.link.dropped)
        delta = {k: v - self._reported.get(k, 0) for k, v in now.items() if v != self._reported.get(k, 0)}
        self.link.send_stats({"in_flight": self.in_flight(), "dropped_delta": delta,
                              "active": self.active(), "high_water": self.high_water()})
        self._reported = now

    async def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        self.link.flush()
        self.send_stats()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # EOF: drain and exit
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("the recorder process did not finish within %.0fs; killing it", timeout)
            proc.kill()
            await proc.wait()


@dataclass
class Sidecar:
    """A running sidecar. ``port``/``admin_port`` are the bound ports (useful with port 0).

    Inline mode has ``recorder``/``registry`` here; process mode has ``child``.
    """

    settings: Settings
    proxy: Proxy
    recording: RecordingSide | None = None
    child: RecorderChild | None = None
    port: int = 0
    admin_port: int | None = None
    _servers: list[Any] = field(default_factory=list)
    _reporter: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.time)

    @property
    def recorder(self) -> Recorder | None:
        return self.recording.recorder if self.recording is not None else None

    @property
    def registry(self) -> CollectorRegistry | None:
        return self.recording.registry if self.recording is not None else None

    def health(self) -> dict[str, Any]:
        r = self.recorder
        assert r is not None
        return {"status": "ok", "upstream": self.proxy.upstream, "listen": self.settings.listen,
                "db": self.settings.db, "stored": r.stored, "queue_depth": r.queue_depth,
                "in_flight": self.proxy.in_flight, "dropped": r.dropped(),
                "uptime_s": round(time.time() - self.started, 1)}

    def dropped(self) -> dict[str, int]:
        """Drops known to this process (in process mode: the proxy side's only)."""
        if self.recorder is not None:
            return self.recorder.dropped()
        return dict(self.child.link.dropped) if self.child is not None else {}

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
        if self.recording is not None:
            await self.recording.stop_services()
        await self.proxy.close()
        if self.child is not None:
            await self.child.stop()
        if self.recording is not None:
            await asyncio.to_thread(self.recording.stop_recorder)
        self._report_drops(final=True)

    def _report_drops(self, final: bool = False, last: dict[str, int] | None = None) -> dict[str, int]:
        dropped = self.dropped()
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
                        registry: CollectorRegistry | None = None, span_processor: Any = None,
                        report_every: float = 10.0) -> Sidecar:
    """Start the recorder (thread or process) and the listeners. Raises on bad settings/ports.

    An injected ``writer``, ``registry`` or ``span_processor`` implies the inline recorder
    (they live here).
    """
    settings.validate()
    inline = (settings.recorder == "inline" or writer is not None or registry is not None
              or span_processor is not None)
    proxy = Proxy(settings.upstream, None, body_limit=settings.capture_body_limit,  # type: ignore[arg-type]
                  preserve_host=settings.preserve_host, forwarded_headers=settings.forwarded_headers,
                  connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                  pool_size=settings.upstream_pool_size, rewrite_itx_endpoint=settings.rewrite_itx_endpoint,
                  capture_telemetry=settings.capture_telemetry, upstream_kind=settings.upstream_kind,
                  propagate_trace=settings.propagate_trace)
    sc = Sidecar(settings, proxy)
    try:
        if inline:
            if writer is None:
                writer = await asyncio.to_thread(StoreWriter, settings.db)
            sc.recording = rec = build_recording(
                settings, writer=writer, registry=registry, in_flight=lambda: proxy.in_flight,
                in_flight_list=proxy.in_flight_list, high_water=lambda: proxy.high_water,
                span_processor=span_processor)
            proxy.recorder = rec.recorder
            rec.recorder.start()
            await rec.start_services()
        else:
            link = RecorderLink(settings.queue_max, settings.queue_max_bytes)
            proxy.recorder = link  # type: ignore[assignment]
            sc.child = RecorderChild(settings, link, proxy)
            await sc.child.start()
            sc.admin_port = sc.child.admin_port
        host, port = settings.listen_addr
        srv, _ = await serve(proxy, host, port)
        sc._servers.append(srv)
        sc.port = srv.sockets[0].getsockname()[1]
        if inline and (admin := settings.admin_addr) is not None:
            assert sc.recording is not None
            sc.admin_port = await sc.recording.start_admin(admin, sc.health)
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
        log.info("pdp_observe forwarding %s -> %s, recording to %s (%s recorder)%s",
                 f"{settings.listen_addr[0]}:{sc.port}", settings.upstream, settings.db, settings.recorder,
                 f"; admin on :{sc.admin_port} (/healthz, /metrics, /api/v1; `pdp-observe tui` attaches here)" if sc.admin_port else "")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: draining queued captures")
        await sc.stop()
        log.info("stopped")
        return 0

    return asyncio.run(main())
